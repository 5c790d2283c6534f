"""Random-weight models by shape, for tests and benchmarks (no weights are ever downloaded)."""

import torch

from .modeling_multiverse.configuration_multiverse import QWEN25_TAG_IDS, MultiverseConfig

# Published Qwen2.5 shapes (config.json of each Instruct model).
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, tie_word_embeddings=False),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "qwen2.5-32b": dict(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                        num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False),
}


def shape_config(size: str, tag_ids=None, vocab_size=None, attn_implementation="sdpa", **overrides):
    """A MultiverseConfig of a named shape. ``tiny`` has head_dim 32: CPU flex needs head_dim >= 32."""
    if size not in SHAPES:
        raise ValueError(f"size={size!r}; choose one of {sorted(SHAPES)}")
    fields = dict(SHAPES[size], rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                  max_position_embeddings=32768, rms_norm_eps=1e-6)
    if vocab_size is not None:
        fields["vocab_size"] = -(-vocab_size // 64) * 64
    fields.update(overrides)
    config = MultiverseConfig(multiverse_tag_ids=tag_ids if tag_ids is not None else QWEN25_TAG_IDS, **fields)
    config._attn_implementation = attn_implementation
    return config


def random_model(size: str = "tiny", tokenizer=None, dtype=torch.float32, device="cpu",
                 attn_implementation="sdpa", seed: int = 0, **overrides):
    """A randomly initialized MultiverseForCausalLM; with ``tokenizer`` its tags and vocabulary are used."""
    from .conversion import seed_token_ids
    from .modeling_multiverse import MultiverseForCausalLM, tag_token_ids

    tag_ids = tag_token_ids(tokenizer) if tokenizer is not None else None
    vocab = len(tokenizer) if tokenizer is not None and size == "tiny" else None
    config = shape_config(size, tag_ids, vocab, attn_implementation, **overrides)
    if tokenizer is not None:
        config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = MultiverseForCausalLM(config)
    return model.to(dtype).eval()
