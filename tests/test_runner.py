"""The model runner's causal prefill (no padding, no path in the prompt) gives what the spelled-out mask gives."""

import torch

from multiverse.modeling_multiverse.layout import layout_from_parse
from multiverse.modeling_multiverse.parser import parse
from multiverse.modeling_multiverse.runner import ModelRunner
from samples import TEXT


def _prefilled(model, prompts, causal_allowed: bool, monkeypatch):
    width = max(len(p) for p in prompts)
    runner = ModelRunner(model, len(prompts), 2 + width + 8, 0, torch.device("cpu"), static=False, cuda_graphs=False)
    tags = model.config.multiverse_tag_ids
    positions = []
    for row, ids in enumerate(prompts):  # as the engine admits a prompt (tree.Trees.admit)
        layout = layout_from_parse(parse(ids, tags), offset=1 + width - len(ids), total=runner.capacity)
        runner.set_layout(row, layout)
        positions.append(layout.position_ids[1:1 + width])
    seen = []
    forward = runner.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("causal", args[6] if len(args) > 6 else False))
        if not causal_allowed:
            kwargs["causal"] = False
            args = args[:6]
        return forward(*args, **kwargs)

    monkeypatch.setattr(runner, "forward", spy)
    logits = runner.prefill(0, prompts, torch.stack(positions), width)
    return logits, runner.cache, seen


def test_causal_prefill_equals_the_masked_one(tiny_model, tokenizer, monkeypatch):
    prompts = [tokenizer.encode("A prompt with no structure in it at all."),
               tokenizer.encode("Another prompt, just as plain, of its own words.")]
    prompts = [p[:12] for p in prompts]  # equal lengths: no padding
    fast, fast_cache, used = _prefilled(tiny_model, prompts, True, monkeypatch)
    slow, slow_cache, _ = _prefilled(tiny_model, prompts, False, monkeypatch)
    assert used == [True]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    for k_fast, k_slow in zip(fast_cache.keys, slow_cache.keys):
        torch.testing.assert_close(k_fast, k_slow)


def test_prefill_keeps_the_mask_for_padding_or_structure(tiny_model, tokenizer, monkeypatch):
    padded = [tokenizer.encode("short"), tokenizer.encode("a somewhat longer prompt than that")]
    assert _prefilled(tiny_model, padded, True, monkeypatch)[2] == [False]
    structured = [tokenizer.encode(TEXT)]  # a whole block: its paths are segments of their own
    assert _prefilled(tiny_model, structured, True, monkeypatch)[2] == [False]
