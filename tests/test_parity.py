"""Logits under the Multiverse mask equal (a) each path run alone and (b) a brute-force dense mask."""

import pytest
import torch

from multiverse.modeling_multiverse import compute_layout
from structures import reference_mask

from samples import NESTED, TEXT

IMPLEMENTATIONS = ["sdpa", "eager", "flex_attention"]


def logits(model, attn, **kwargs):
    model.config._attn_implementation = attn
    try:
        with torch.no_grad():
            return model(**kwargs).logits[0]
    finally:
        model.config._attn_implementation = "sdpa"


def plain_causal(model, ids, positions):
    """The unmodified Qwen2 path: an ordinary causal sequence with explicit positions."""
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = super(type(model.model), model.model).forward(
                input_ids=ids[None], position_ids=positions[None], attention_mask=torch.ones(1, len(ids)))
            return model.lm_head(out.last_hidden_state)[0]
    finally:
        model.config._attn_implementation = "sdpa"


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
def test_each_path_equals_that_path_run_alone(tiny_model, tokenizer, attn):
    ids = torch.tensor(tokenizer.encode(TEXT))
    layout = compute_layout(ids, tiny_model.config.multiverse_tag_ids)
    full = logits(tiny_model, attn, input_ids=ids[None])
    seg = layout.segment_ids
    first_path = int((seg != 1).nonzero()[0])
    path_segments = sorted(set(seg.tolist()) - {1})
    assert len(path_segments) == 3
    for s in path_segments:
        own = (seg == s).nonzero().flatten()
        sel = torch.cat([torch.arange(first_path), own])
        alone = plain_causal(tiny_model, ids[sel], layout.position_ids[sel])
        torch.testing.assert_close(full[own], alone[first_path:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
@pytest.mark.parametrize("text", [TEXT, NESTED], ids=["flat", "nested"])
def test_every_token_equals_brute_force_dense_mask(tiny_model, tokenizer, attn, text):
    from multiverse.modeling_multiverse.parser import parse

    ids = torch.tensor(tokenizer.encode(text))
    tag_ids = tiny_model.config.multiverse_tag_ids
    layout = compute_layout(ids, tag_ids)
    result = parse(ids.tolist(), tag_ids)
    addresses = [None] * len(ids)
    for start, end, sid, _ in result.runs:
        for i in range(start, end):
            addresses[i] = result.streams[sid].address
    dense = torch.tensor(reference_mask(addresses))
    additive = torch.zeros(dense.shape).masked_fill(~dense, torch.finfo(torch.float32).min)[None, None]
    reference = logits(tiny_model, "eager", input_ids=ids[None], attention_mask=additive,
                       position_ids=layout.position_ids[None])
    ours = logits(tiny_model, attn, input_ids=ids[None])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # and the structure matters: plain causal attention differs on the later paths
    causal = plain_causal(tiny_model, ids, torch.arange(len(ids)))
    assert (causal - reference).abs().max() > 1e-3


def test_precomputed_structure_equals_derived(tiny_model, tokenizer):
    ids = torch.tensor(tokenizer.encode(NESTED))
    layout = compute_layout(ids, tiny_model.config.multiverse_tag_ids)
    derived = logits(tiny_model, "sdpa", input_ids=ids[None])
    given = logits(tiny_model, "sdpa", input_ids=ids[None], mv_segment_ids=layout.segment_ids[None],
                   mv_visibility=layout.visibility[None], position_ids=layout.position_ids[None])
    torch.testing.assert_close(derived, given, atol=0, rtol=0)


def test_one_training_step_with_sdpa(tokenizer):
    from multiverse.model_shapes import random_model

    model = random_model("tiny", tokenizer).train()
    ids = torch.tensor([tokenizer.encode(NESTED)])
    before = model.lm_head.weight.detach().clone()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.lm_head.weight)


@pytest.mark.parametrize("rule", ["reference", "branch-start"])
def test_the_config_rule_moves_training_attention_and_engine_together(tiny_model, tokenizer, rule):
    """Whichever rule the config records, forward reads it and the engine decodes with it: forced replay of a
    nested completion gives the teacher-forced logits, and the two rules give different logits."""
    from samples import encode_pair

    prompt, completion = encode_pair(tokenizer, NESTED)
    ids = torch.tensor([prompt + completion])
    tiny_model.config.multiverse_position_rule = rule
    try:
        with torch.no_grad():
            forced = tiny_model(ids).logits[0, len(prompt):]
        out = tiny_model.generate(torch.tensor([prompt]), forced_completions=[completion], return_dict_in_generate=True,
                                  output_logits=True, max_new_tokens=len(completion) + 8)
    finally:
        tiny_model.config.multiverse_position_rule = "reference"
    layout = compute_layout(ids[0], tiny_model.config.multiverse_tag_ids, position_rule=rule)
    given = logits(tiny_model, "sdpa", input_ids=ids, mv_segment_ids=layout.segment_ids[None],
                   mv_visibility=layout.order[None], position_ids=layout.position_ids[None])
    torch.testing.assert_close(forced, given[len(prompt):], atol=1e-5, rtol=0)  # forward used the rule
    recorded = [(i, lg) for i, lg in enumerate(out.position_logits[0]) if lg is not None]
    assert len(recorded) == len(completion)
    for i, lg in recorded:
        torch.testing.assert_close(lg, forced[i], atol=1e-4, rtol=0)
    other = compute_layout(ids[0], tiny_model.config.multiverse_tag_ids,
                           position_rule="branch-start" if rule == "reference" else "reference")
    assert not torch.equal(layout.position_ids, other.position_ids)
