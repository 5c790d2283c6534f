"""The static decode step behind ``cuda_graphs=True``: the same logits as the eager step.

On the CPU the static step (whole-cache reads, power-of-two query widths) runs eagerly; on a GPU it is
replayed from CUDA graphs. Both must reproduce the eager engine, which equals teacher forcing.
"""

import pytest
import torch

from engine_helpers import run_engine
from multiverse.modeling_multiverse.decode_graphs import StaticDecodeStep, _bucket
from samples import NESTED, TEXT, encode_pair

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _batch(tokenizer):
    pairs = [encode_pair(tokenizer, t) for t in (TEXT, NESTED, "No structure here, just text.")]
    return [p for p, _ in pairs], [c for _, c in pairs]


def _assert_same(a, b):
    assert a.sequences.tolist() == b.sequences.tolist()
    for x, y in zip(a.multiverse, b.multiverse):
        assert (x["steps"], x["forks"], x["kv_slots"]) == (y["steps"], y["forks"], y["kv_slots"])
    for rows_a, rows_b in zip(a.position_logits, b.position_logits):
        for la, lb in zip(rows_a, rows_b):
            torch.testing.assert_close(la, lb, atol=1e-4, rtol=0)


def test_bucket_rounds_up_to_powers_of_two():
    assert [_bucket(w) for w in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]


def test_static_step_equals_eager_step_on_a_batch_of_structures(tiny_model, tokenizer):
    prompts, completions = _batch(tokenizer)
    kwargs = dict(forced=completions, max_new_tokens=200, output_logits=True)
    eager = run_engine(tiny_model, prompts, **kwargs)
    static = run_engine(tiny_model, prompts, static_decode=True, **kwargs)
    _assert_same(eager, static)
    assert max(s["forks"] for s in static.multiverse) == 2  # widths 1, 2 and 4 were all stepped
    held = tiny_model._multiverse_static_decode
    _assert_same(eager, run_engine(tiny_model, prompts, static_decode=True, **kwargs))  # a cleared, reused layout
    assert tiny_model._multiverse_static_decode is held
    run_engine(tiny_model, prompts, static_decode=True, forced=completions, max_new_tokens=400)
    assert tiny_model._multiverse_static_decode is not held  # outgrown: rebuilt


def test_static_step_samples_like_the_eager_step(tiny_model, tokenizer):
    prompts, _ = _batch(tokenizer)
    kwargs = dict(max_new_tokens=40, do_sample=True, seed=3, tokenizer=tokenizer, output_logits=True)
    _assert_same(run_engine(tiny_model, prompts, **kwargs), run_engine(tiny_model, prompts, static_decode=True,
                                                                        **kwargs))


def test_static_step_rebuilds_when_the_layout_outgrows_its_visibility(tiny_model):
    from multiverse.modeling_multiverse.kv_cache import BranchKVCache, LayoutBuffers

    cache = BranchKVCache(tiny_model.config, 1, 32, torch.float32, "cpu")
    layout = LayoutBuffers(1, 32, "cpu")
    step = StaticDecodeStep(tiny_model, cache, layout, pad_id=0, capture=False)
    one = torch.zeros(1, 1, dtype=torch.long)
    step(one, one, one)
    before = step.steps[1]
    layout.reserve(40)  # reallocates the visibility tensor, as many branches would
    step(one, one, one)
    assert step.steps[1] is not before and step.steps[1][3] is layout.visibility


def test_cuda_graphs_are_refused_without_a_gpu_or_in_autoregressive_mode(tiny_model, tokenizer):
    prompt, _ = encode_pair(tokenizer, "")
    with pytest.raises(ValueError, match="autoregressive"):
        tiny_model.generate(torch.tensor([prompt]), cuda_graphs=True, multiverse_parallel=False, max_new_tokens=4)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            tiny_model.generate(torch.tensor([prompt]), cuda_graphs=True, max_new_tokens=4)


@CUDA
def test_cuda_graph_replay_equals_eager_decoding_on_gpu(tiny_model, tokenizer):
    model = tiny_model.to("cuda")
    try:
        prompts, completions = _batch(tokenizer)
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device="cuda")
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device="cuda")
        kwargs = dict(attention_mask=mask, forced_completions=completions, max_new_tokens=200,
                      return_dict_in_generate=True, output_logits=True)
        _assert_same(model.generate(ids, **kwargs), model.generate(ids, cuda_graphs=True, **kwargs))
        sampled = dict(attention_mask=mask, max_new_tokens=40, do_sample=True, seed=3, tokenizer=tokenizer,
                       return_dict_in_generate=True, output_logits=True)
        _assert_same(model.generate(ids, **sampled), model.generate(ids, cuda_graphs=True, **sampled))
    finally:
        tiny_model.to("cpu")


def test_decode_attention_equals_sdpa_over_repeated_heads():
    from multiverse.modeling_multiverse.decode_graphs import decode_attention

    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, h, n, 32, generator=g) for h, n in ((6, 3), (2, 40), (2, 40)))
    mask = torch.rand(2, 1, 3, 40, generator=g) > 0.3
    mask[..., 0] = True  # no fully masked row, as the scratch slot guarantees
    out, _ = decode_attention(None, query, key, value, mask, scaling=0.2)
    ref = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, dim=1), value.repeat_interleave(3, dim=1), attn_mask=mask, scale=0.2)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=0)
