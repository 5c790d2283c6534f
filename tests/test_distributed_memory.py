"""multiverse.memory against the models and caches it describes, and the README table it generates."""

from pathlib import Path

import pytest
import torch

from multiverse.memory import (check_tensor_parallel, kv_bytes_per_token, memory_table, parameter_counts,
                               training_bytes_per_gpu, weight_bytes_per_rank)
from multiverse.model_shapes import random_model, shape_config
from multiverse.modeling_multiverse import MultiverseForCausalLM
from multiverse.modeling_multiverse.kv_cache import BranchKVCache
from multiverse.modeling_multiverse.placement import kv_layers

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("size, published", [("qwen2.5-7b", 7_615_616_512), ("qwen2.5-32b", 32_763_876_352)])
def test_parameter_count_is_the_model_s(size, published):
    config = shape_config(size)
    with torch.device("meta"):  # the full-size module, no memory
        model = MultiverseForCausalLM(config)
    counts = parameter_counts(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters()) == published
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert counts["replicated"] == norms
    assert counts["per_layer"] == sum(p.numel() for p in model.model.layers[0].parameters())


def test_kv_bytes_per_token_is_what_the_engine_allocates():
    model = random_model("tiny", num_attention_heads=4, num_key_value_heads=2, hidden_size=128)
    capacity = 64
    cache = BranchKVCache(model.config, 1, capacity, torch.bfloat16, "cpu", layers=kv_layers(model, "cpu"))
    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert allocated == capacity * kv_bytes_per_token(model.config)
    # A tensor-parallel rank holds half the K/V heads (tests/test_distributed_generate.py checks the shards).
    assert kv_bytes_per_token(model.config, tp=2) * 2 == kv_bytes_per_token(model.config)


def test_sharding_arithmetic():
    config = shape_config("qwen2.5-32b")
    counts = parameter_counts(config)
    assert weight_bytes_per_rank(config, 1) == 2 * counts["total"]
    assert weight_bytes_per_rank(config, 8) == 2 * (counts["sharded"] // 8 + counts["replicated"])
    assert training_bytes_per_gpu(config, 8) == 16 * counts["total"] // 8
    assert kv_bytes_per_token(config) == 2 * 64 * 8 * 128 * 2  # K and V, 64 layers, 8 heads of 128, bf16
    with pytest.raises(ValueError, match="tp=8 does not divide num_attention_heads=28"):
        check_tensor_parallel(shape_config("qwen2.5-7b"), 8)


def test_readme_table_is_generated_by_the_code():
    assert memory_table() in README.read_text(encoding="utf-8"), "rerun `python -m multiverse.memory` into README"
