"""Cached autoregressive decoding (``generate(..., multiverse_parallel=False)``) under the Multiverse mask.

Every check compares against the layout of the whole sequence (``compute_layout``, teacher forcing with
``use_cache=False``) or against the parallel engine, never against hard-coded positions, so they hold
whatever the position rule is.
"""

import copy
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor

from multiverse.conversion import seed_token_ids
from multiverse.evaluation.runner import left_pad
from multiverse.modeling_multiverse import MultiverseForCausalLM, compute_layout
from multiverse.modeling_multiverse.cached_layout import ATTRIBUTE, CachedLayout
from multiverse.modeling_multiverse.compat import CACHE_KWARG, find_cache
from multiverse.modeling_multiverse.parser import parse
from multiverse.modeling_multiverse.structure import POSITION_RULES
from structures import TAG_IDS, build, stream

GOAL3 = ("<Parallel>\n<Goal>\n<Outline>\n1: add a\n</Outline>\n<Outline>\n2: add b\n</Outline>\n"
         "<Outline>\n3: add c\n</Outline>\n</Goal>\n")
NESTED = ("<Path>\n2: b has parts\n<Parallel>\n<Goal>\n<Outline>\n2.1: left\n</Outline>\n<Outline>\n2.2: right\n"
          "</Outline>\n</Goal>\n<Path>\n2.1: l is 1\n</Path>\n<Path>\n2.2: r is 4\n</Path>\n<Conclusion>\nb is 5\n"
          "</Conclusion>\n</Parallel>\nso b is 5\n</Path>\n")
# Three paths, path 2 nesting a block of two: the document both decoding modes must reproduce.
COMPLETION = (GOAL3 + "<Path>\n1: a is 3\n</Path>\n" + NESTED + "<Path>\n3: c is 7\n</Path>\n<Conclusion>\n"
              "3+5+7=15\n</Conclusion>\n</Parallel>\nThe answer is 15.")
PROMPTS = ["Question: add a, b and c.\n", "Q: sum.\n"]

# (prompt, continuation) per row: the prompt ends where the case says, the continuation runs on from there.
CASES = {
    # Left-padded batch, each prompt ending inside path 2 with path 1 (and the nested block's path 2.1) in it.
    "inside_path_2": [(PROMPTS[0] + COMPLETION, "<Path>\n2: b has"), (PROMPTS[1] + COMPLETION, "<Path>\n2.2: r")],
    "nested": [(PROMPTS[0] + COMPLETION, "<Path>\n2.1: l"), (PROMPTS[1] + COMPLETION, "so b is")],
    "opens_a_block": [(PROMPTS[0] + COMPLETION, "<Parallel>"), (PROMPTS[1] + COMPLETION, "<Goal>")],
}


class ForceContinuation(LogitsProcessor):
    """Row b emits ``rows[b][step]``: generate follows a scripted document token by token."""

    def __init__(self, rows, prompt_width: int):
        self.rows, self.width = rows, prompt_width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.width
        forced = torch.full_like(scores, torch.finfo(scores.dtype).min)
        for b, row in enumerate(self.rows):
            forced[b, row[step]] = 0.0
        return forced


def split_case(tokenizer, case):
    """Prompt ids (cut after the given marker's first token run) and continuation ids per row."""
    prompts, continuations = [], []
    for text, cut_after in CASES[case]:
        cut = text.index(cut_after) + len(cut_after)
        ids = tokenizer.encode(text)
        n_prompt = len(tokenizer.encode(text[:cut]))
        assert ids[:n_prompt] == tokenizer.encode(text[:cut]), "the cut must fall between tokens"
        prompts.append(ids[:n_prompt])
        continuations.append(ids[n_prompt:])
    n = min(len(c) for c in continuations)
    return prompts, [c[:n] for c in continuations]


FLEX_ON_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason=(
    "torch 2.13's CPU inductor cannot compile flex_attention's cached decode kernel (CppCompileError, "
    "'cur_kvSplitSize0' not declared); CUDA is where flex_attention serves"))


@pytest.mark.parametrize("attn", ["sdpa", "eager", pytest.param("flex_attention", marks=FLEX_ON_CUDA)])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("rule", POSITION_RULES)
def test_cached_logits_equal_teacher_forcing(tiny_model, tokenizer, case, attn, rule):
    prompts, continuations = split_case(tokenizer, case)
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    n = len(continuations[0])
    model = tiny_model if attn != "flex_attention" else copy.deepcopy(tiny_model).cuda()
    ids, mask = ids.to(model.device), mask.to(model.device)
    model.config._attn_implementation, model.config.multiverse_position_rule = attn, rule
    try:
        out = model.generate(ids, attention_mask=mask, multiverse_parallel=False, max_new_tokens=n,
                                  do_sample=False, logits_processor=[ForceContinuation(continuations, ids.shape[1])],
                                  return_dict_in_generate=True, output_logits=True, eos_token_id=None,
                                  pad_token_id=tokenizer.pad_token_id)
        assert out.sequences[:, ids.shape[1]:].tolist() == continuations  # the script was followed
        full_mask = torch.cat([mask, mask.new_ones(len(prompts), n)], dim=1)
        with torch.no_grad():
            teacher = model(out.sequences, attention_mask=full_mask, use_cache=False).logits
    finally:
        model.config._attn_implementation, model.config.multiverse_position_rule = "sdpa", POSITION_RULES[0]
    cached = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(cached, teacher[:, ids.shape[1] - 1:-1], atol=1e-4, rtol=0)


def test_cache_rebuilds_its_layout_when_rows_move(tiny_model, tokenizer):
    """Beam search reorders cache rows, assisted decoding crops them: the layout follows the history."""
    prompts, continuations = split_case(tokenizer, "inside_path_2")
    rows = [p + c for p, c in zip(prompts, continuations)]
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    width = ids.shape[1]
    with torch.no_grad():
        teacher = tiny_model(ids, attention_mask=mask, use_cache=False).logits
        cut = width - 6
        out = tiny_model(ids[:, :cut], attention_mask=mask[:, :cut], use_cache=True)
        cache = out[CACHE_KWARG]
        cache.reorder_cache(torch.tensor([1, 0]))  # rows swap, as beam search does
        swapped, swapped_mask = ids.flip(0), mask.flip(0)
        step = tiny_model(swapped[:, cut:cut + 2], attention_mask=swapped_mask[:, :cut + 2],
                          mv_history_ids=swapped[:, :cut + 2], **{CACHE_KWARG: cache})
        torch.testing.assert_close(step.logits, teacher.flip(0)[:, cut:cut + 2], atol=1e-4, rtol=0)
        cache.crop(-5)  # drop the last 5 tokens, as assisted decoding does
        step = tiny_model(swapped[:, cut - 3:cut], attention_mask=swapped_mask[:, :cut],
                          mv_history_ids=swapped[:, :cut], **{CACHE_KWARG: cache})
        torch.testing.assert_close(step.logits, teacher.flip(0)[:, cut - 3:cut], atol=1e-4, rtol=0)
        with pytest.raises(ValueError, match="mv_history_ids"):
            setattr(cache, ATTRIBUTE, None)
            tiny_model(swapped[:, cut:cut + 1], attention_mask=swapped_mask[:, :cut + 1], **{CACHE_KWARG: cache})


def test_each_step_parses_only_its_new_tokens(tiny_model, tokenizer, monkeypatch):
    """The layout is extended per token, not re-parsed from the whole history (O(L^2) over a decode)."""
    prompts, continuations = split_case(tokenizer, "nested")
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    parsed = []
    original = CachedLayout._feed
    monkeypatch.setattr(CachedLayout, "_feed", lambda self, b, tokens: (parsed.append(len(tokens)),
                                                                        original(self, b, tokens))[1])
    n = len(continuations[0])
    tiny_model.generate(ids, attention_mask=mask, multiverse_parallel=False, max_new_tokens=n, do_sample=False,
                        logits_processor=[ForceContinuation(continuations, ids.shape[1])], eos_token_id=None,
                        pad_token_id=tokenizer.pad_token_id)
    # Each real prompt token once, then one token per row per step (the last one is never fed back).
    assert sum(parsed) == int(mask.sum()) + len(prompts) * (n - 1)
    assert len(parsed) == len(prompts) * n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=stream(0, 3), b=stream(0, 3), pad=st.integers(0, 5), chunks=st.lists(st.integers(1, 40), min_size=1),
       rule=st.sampled_from(POSITION_RULES))
def test_extended_layout_equals_the_whole_sequence_layout(a, b, pad, chunks, rule):
    second = build(b).ids
    ids, mask = left_pad([build(a).ids, [0] * pad + second], 0)
    mask[1, :ids.shape[1] - len(second)] = 0  # the extra zeros are padding too
    state, positions, start, k = CachedLayout(TAG_IDS, 2, "cpu", rule), [], 0, 0
    while start < ids.shape[1]:
        end = min(ids.shape[1], start + chunks[k % len(chunks)])
        positions.append(state.extend(ids[:, start:end], mask[:, start:end]))
        start, k = end, k + 1
    for r in range(2):
        whole = compute_layout(ids[r], TAG_IDS, mask[r], rule)
        n = whole.visibility.shape[0]
        assert torch.equal(state.segments[r, :ids.shape[1]], whole.segment_ids.long())
        assert torch.equal(torch.cat(positions, dim=1)[r], whole.position_ids)
        assert torch.equal(state.visibility[r, :n, :n], whole.visibility)
        assert not state.visibility[r, n:].any()


def test_decoding_raises_no_deprecation_warning(tiny_model, tokenizer):
    """Fails when transformers (or torch) deprecates an argument the project passes on these paths."""
    prompts, _ = split_case(tokenizer, "inside_path_2")
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        tiny_model.generate(ids, attention_mask=mask, multiverse_parallel=False, max_new_tokens=6, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
        plain, plain_mask = left_pad([tokenizer.encode(p) for p in PROMPTS], tokenizer.pad_token_id)
        tiny_model.generate(plain, attention_mask=plain_mask, max_new_tokens=6, do_sample=False)
        with torch.no_grad():
            tiny_model(ids, attention_mask=mask, use_cache=True)
            tiny_model(ids, attention_mask=mask, use_cache=False)


class ScriptedLM(MultiverseForCausalLM):
    """Picks the next token from the ids its query row can see, read off the mask the backbone built.

    ``script`` maps a view (the sorted ids of the visible keys: the engine writes sibling paths to interleaved
    cache slots, so key order is not text order) to the next token. Built from a document's own layout, it
    writes that document only if every query sees exactly what the layout lets it see; any other view falls
    back to ``fallback``. Works under both decoding modes: HF's cache (key k is sequence index k) and the
    engine's (key k is a cache slot, its id recorded when written).
    """

    def __init__(self, config, script: dict, fallback: int):
        super().__init__(config)
        self.script, self.fallback = script, fallback
        self.model.layers[0].self_attn.register_forward_pre_hook(self._grab_mask, with_kwargs=True)
        self.slot_ids = {}

    def _grab_mask(self, module, args, kwargs):
        self.mask = kwargs["attention_mask"]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, logits_to_keep=0, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        cache = find_cache(kwargs)
        if getattr(cache, "write_slots", None) is not None:  # the engine: record the ids of the slots written
            keys = self.slot_ids.setdefault(id(cache), torch.zeros(input_ids.shape[0], cache.capacity, dtype=torch.long))
            keys[torch.arange(input_ids.shape[0])[:, None], cache.write_slots] = input_ids
        else:
            keys = kwargs.get("mv_history_ids", input_ids)
        visible = self.mask if self.mask.dtype == torch.bool else self.mask == 0
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size)
        for b in range(input_ids.shape[0]):
            for q in range(input_ids.shape[1]):
                seen = tuple(sorted(keys[b, :visible.shape[-1]][visible[b, 0, q]].tolist()))
                logits[b, q, self.script.get(seen, self.fallback)] = 10.0
        out.logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        return out


def scripted_model(tokenizer, documents):
    """A ScriptedLM that writes each (prompt, completion) document, then eos."""
    from multiverse.model_shapes import shape_config
    from multiverse.modeling_multiverse import tag_token_ids

    config = shape_config("tiny", tag_token_ids(tokenizer), len(tokenizer))
    config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
    config.eos_token_id = config.pad_token_id = tokenizer.eos_token_id
    script, ambiguous = {}, set()
    for prompt, completion in documents:
        ids = tokenizer.encode(prompt + completion) + [tokenizer.eos_token_id]
        layout = compute_layout(ids[:-1], config.multiverse_tag_ids, position_rule=config.multiverse_position_rule)
        seg, vis = layout.segment_ids.long(), layout.visibility
        for i in range(len(tokenizer.encode(prompt)) - 1, len(ids) - 1):
            seen = tuple(sorted(ids[k] for k in range(i + 1) if vis[seg[i], seg[k]]))
            if script.setdefault(seen, ids[i + 1]) != ids[i + 1]:
                ambiguous.add(seen)  # "\n<Path>\n" then "2" or "3": a path cannot see its label; seeds force it
    for seen in ambiguous:
        del script[seen]
    return ScriptedLM(config, script, fallback=tokenizer.encode("?")[0]).eval()


def test_greedy_autoregressive_equals_parallel_on_three_nested_paths(tokenizer):
    documents = [(p, COMPLETION) for p in PROMPTS]
    model = scripted_model(tokenizer, documents)
    ids, mask = left_pad([tokenizer.encode(p) for p in PROMPTS], tokenizer.eos_token_id)
    n = len(tokenizer.encode(COMPLETION)) + 4
    parallel = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False)
    autoregressive = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                    multiverse_parallel=False)
    result = parse(parallel[0, ids.shape[1]:].tolist(), model.config.multiverse_tag_ids)
    assert sum(len(b.paths) for b in result.blocks) >= 3 and result.max_depth == 2  # it forked and nested
    for b, prompt in enumerate(PROMPTS):
        expected = tokenizer.encode(prompt + COMPLETION) + [tokenizer.eos_token_id]
        for out in (parallel, autoregressive):
            row = out[b][mask[b].bool().tolist() + [True] * (out.shape[1] - ids.shape[1])].tolist()
            assert row[:len(expected)] == expected
            assert set(row[len(expected):]) <= {tokenizer.eos_token_id}


def test_a_static_cache_is_refused_not_decoded_under_the_wrong_mask(tiny_model, tokenizer):
    """HF prebuilds a plain causal mask for static caches; decoding a block under it would be silently wrong."""
    prompts, _ = split_case(tokenizer, "inside_path_2")
    with pytest.raises(ValueError, match="dynamic cache"):
        tiny_model.generate(torch.tensor([prompts[0]]), multiverse_parallel=False, max_new_tokens=2, do_sample=False,
                            cache_implementation="static", pad_token_id=tokenizer.pad_token_id)


def test_embeddings_without_ids_or_layout_are_refused(tiny_model, tokenizer):
    ids = torch.tensor([tokenizer.encode(PROMPTS[0] + GOAL3)])
    with pytest.raises(ValueError, match="inputs_embeds"):
        tiny_model(inputs_embeds=tiny_model.get_input_embeddings()(ids))
