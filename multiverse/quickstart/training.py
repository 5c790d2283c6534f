"""Train the quickstart's models from scratch with the TRL recipe: a tokenizer, a ~250K-parameter Multiverse
model on the Multiverse data and, on the same budget, the same model on the sequential data."""

import math
import time

import torch

from ..curation.dataset_build import build_dataset
from ..curation.toy_task import as_chat, as_records
from ..model_shapes import shape_config
from ..modeling_multiverse import MultiverseForCausalLM, tag_token_ids
from ..tokenization import train_tokenizer

# 3 layers, hidden 64, head_dim 32 (CPU-safe for flex), ~250K parameters with the toy vocabulary: on 2 CPU
# cores it takes ~0.65 s per step of 24 examples, twice the steps of the former 1.1M shape in the same time.
# Rope theta 1e4, not Qwen's 1e6: with 1e6 copying a digit from four tokens back was still at chance after
# 300 steps (head_dim 32 leaves few fast-turning frequencies), with 1e4 it was learned.
MODEL_SHAPE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                   num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=1024,
                   rope_parameters={"rope_type": "default", "rope_theta": 1e4})


def toy_tokenizer(examples, vocab_size: int = 320):
    """A Qwen2-style tokenizer trained on the toy conversations (digits stay single tokens)."""
    texts = []
    for e in examples:
        chat = as_chat(e)
        texts += [m["content"] for m in chat]
    return train_tokenizer(texts, vocab_size)


def toy_datasets(examples):
    """The Multiverse split and the sequential split, prompt/completion in chat form."""
    return build_dataset(as_records(examples), prompt_suffixes=False)  # evaluated with plain prompts


def fresh_model(tokenizer, seed: int = 0) -> MultiverseForCausalLM:
    from ..conversion import seed_token_ids

    config = shape_config("tiny", tag_token_ids(tokenizer), len(tokenizer), **MODEL_SHAPE)
    config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = MultiverseForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def train(model, tokenizer, dataset, out_dir: str, steps: int, batch_size: int = 32, lr: float = 3e-3,
          seed: int = 0, log=print) -> dict:
    """``steps`` optimizer steps of MultiverseSFTTrainer (sdpa, CPU); returns time and final loss."""
    from trl import SFTConfig

    from ..trl_recipes.collator import MultiverseDataCollator
    from ..trl_recipes.trainer import MultiverseSFTTrainer

    args = SFTConfig(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
                     learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
                     weight_decay=0.0, adam_beta2=0.98, logging_steps=max(1, steps // 10), save_strategy="no",
                     report_to=[], use_cpu=True, activation_checkpointing=False, bf16=False, max_length=512, seed=seed, data_seed=seed,
                     dataloader_num_workers=0, remove_unused_columns=False, completion_only_loss=True)
    collator = MultiverseDataCollator(model.config.multiverse_tag_ids, tokenizer.pad_token_id,
                                      max_length=args.max_length, position_rule=model.config.multiverse_position_rule)
    model.config._attn_implementation = "sdpa"  # FlexAttention has no backward on the CPU
    trainer = MultiverseSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=collator)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    log(f"  trained {steps} steps in {seconds:.0f}s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"seconds": round(seconds, 1), "steps": steps, "final_loss": round(losses[-1], 4),
            "train_loss": round(result.training_loss, 4) if not math.isnan(result.training_loss) else None}
