"""The memory a Multiverse model needs on each GPU, computed from its config (the README's Multi-GPU table).

- **Weights per rank** under ``tp_plan="auto"``: transformers' Qwen2 plan shards the embedding, every projection
  and the LM head over the ranks; only the RMSNorm weights are replicated.
- **KV cache per token per rank**: the engine keeps one K and one V row per token and layer (paths share their
  prompt's cache, nothing is duplicated), for the K/V heads the rank holds.
- **Training state per GPU** with FSDP2 or ZeRO-3 over N GPUs: 16 bytes per parameter, sharded. FSDP2 through
  accelerate upcasts the parameters to fp32 under bf16 mixed precision (4 + 4 for gradients + 8 for AdamW's two
  moments); ZeRO-3 keeps bf16 parameters and gradients plus fp32 master weights and moments (2 + 2 + 12).
  Activations come on top (with gradient checkpointing, one hidden state per token and layer).

``python -m multiverse.memory`` prints the table.
"""

BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TRAIN_BYTES_PER_PARAM = 16
GIB = 1024 ** 3


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def parameter_counts(config) -> dict:
    """Parameters of a Qwen2-shaped causal LM by kind: ``sharded`` ones are split by tensor parallelism,
    ``replicated`` ones (the norms) are held whole by every rank."""
    h, d = config.hidden_size, head_dim(config)
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    attention = h * q + q + 2 * (h * kv + kv) + q * h  # q/k/v carry biases in Qwen2, o does not
    mlp = 3 * h * config.intermediate_size
    embedding = config.vocab_size * h
    lm_head = 0 if config.tie_word_embeddings else embedding
    sharded = embedding + lm_head + config.num_hidden_layers * (attention + mlp)
    replicated = (2 * config.num_hidden_layers + 1) * h
    return {"sharded": sharded, "replicated": replicated, "total": sharded + replicated,
            "per_layer": attention + mlp + 2 * h}


def check_tensor_parallel(config, tp: int):
    """Tensor parallelism splits whole heads: both head counts must divide by ``tp``."""
    if tp < 1:
        raise ValueError(f"tp={tp}: the number of tensor-parallel ranks must be at least 1")
    for name in ("num_attention_heads", "num_key_value_heads"):
        if getattr(config, name) % tp:
            raise ValueError(f"tp={tp} does not divide {name}={getattr(config, name)}: each rank must hold whole heads")


def weight_bytes_per_rank(config, tp: int = 1, dtype: str = "bfloat16") -> int:
    check_tensor_parallel(config, tp)
    counts = parameter_counts(config)
    return (counts["sharded"] // tp + counts["replicated"]) * BYTES[dtype]


def kv_bytes_per_token(config, tp: int = 1, dtype: str = "bfloat16") -> int:
    """One token's keys and values in every layer, for the K/V heads one rank holds."""
    check_tensor_parallel(config, tp)
    return 2 * config.num_hidden_layers * (config.num_key_value_heads // tp) * head_dim(config) * BYTES[dtype]


def training_bytes_per_gpu(config, gpus: int) -> int:
    """Parameters, gradients and AdamW state sharded over ``gpus`` by FSDP2 or ZeRO-3 (activations excluded)."""
    if gpus < 1:
        raise ValueError(f"gpus={gpus}: must be at least 1")
    return TRAIN_BYTES_PER_PARAM * parameter_counts(config)["total"] // gpus


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def memory_table(sizes=("qwen2.5-7b", "qwen2.5-32b"), gpus=(1, 2, 4, 8), context: int = 8192) -> str:
    """Markdown: per model and GPU count, bf16 weights and KV cache per rank (tensor parallel) and training state
    per GPU (FSDP2 / ZeRO-3). A dash where tensor parallelism cannot split the heads evenly."""
    from .model_shapes import shape_config

    header = ("| model | params | GPUs | weights / GPU (TP) | KV / token / GPU | "
              f"KV for {context // 1024}K tokens / GPU | training state / GPU (FSDP2, ZeRO-3) |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        config = shape_config(size)
        params = parameter_counts(config)["total"]
        for n in gpus:
            try:
                weights, kv = weight_bytes_per_rank(config, n), kv_bytes_per_token(config, n)
                cells = [f"{_gib(weights)} GiB", f"{kv / 1024:.0f} KiB", f"{_gib(kv * context)} GiB"]
            except ValueError:
                cells = ["-", "-", "-"]
            lines.append(f"| {size} | {params / 1e9:.2f}B | {n} | " + " | ".join(cells)
                         + f" | {_gib(training_bytes_per_gpu(config, n))} GiB |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(memory_table())
