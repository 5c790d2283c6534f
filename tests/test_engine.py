"""The parallel engine: parity with teacher forcing, no duplication, corpus replay, determinism."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.modeling_multiverse.parser import parse, well_formed_prefix
from multiverse.transcripts import read_transcript
from structures import TAG_IDS as TOY_TAGS, build, stream
from samples import NESTED, TEXT, corpus_sets, encode_pair


def teacher_forced(model, prompt, completion):
    with torch.no_grad():
        return model(torch.tensor([prompt + completion])).logits[0, len(prompt):]


def assert_parity(model, prompt, completion):
    out = model.generate(torch.tensor([prompt]), forced_completions=[completion], return_dict_in_generate=True,
                         output_logits=True, max_new_tokens=len(completion) + 8)
    assert out.sequences[0, len(prompt):].tolist() == completion
    reference = teacher_forced(model, prompt, completion)
    recorded = [(i, lg) for i, lg in enumerate(out.position_logits[0]) if lg is not None]
    assert len(recorded) == len(completion)  # a script that ends feeds its last token back too
    for i, lg in recorded:
        torch.testing.assert_close(lg, reference[i], atol=1e-4, rtol=0)
    stats = out.multiverse[0]
    assert stats["steps"] == parse(completion, model.config.multiverse_tag_ids).critical_path
    # no duplication: the cache holds the prompt and each generated token exactly once
    assert stats["kv_slots"] == len(prompt) + len(completion)
    return out


@pytest.mark.parametrize("text", [TEXT, NESTED], ids=["flat", "nested"])
def test_engine_logits_equal_teacher_forcing(tiny_model, tokenizer, text):
    prompt, completion = encode_pair(tokenizer, text)
    out = assert_parity(tiny_model, prompt, completion)
    stats = out.multiverse[0]
    assert stats["forks"] == (1 if text == TEXT else 2)
    assert stats["parallelism"] > 1.0
    assert stats["max_depth"] == (1 if text == TEXT else 2)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)))
def test_engine_parity_on_random_structures(tiny_model, tokenizer, items):
    tags = tiny_model.config.multiverse_tag_ids
    to_real = {t: tags[i] for i, t in enumerate(TOY_TAGS)} | {5: tokenizer.encode("\n")[0]}
    completion = [to_real.get(t, 300 + t) for t in build(items).ids]
    prompt, _ = encode_pair(tokenizer, "")
    assert_parity(tiny_model, prompt, completion)


def test_flex_configured_model_decodes_like_sdpa(tiny_model, tokenizer):
    """Regression: a flex_attention model got the engine's bool mask, which flex reads as a score bias."""
    prompt, completion = encode_pair(tokenizer, NESTED)
    tiny_model.config._attn_implementation = "flex_attention"
    try:
        out = tiny_model.generate(torch.tensor([prompt]), forced_completions=[completion], output_logits=True,
                                  return_dict_in_generate=True, max_new_tokens=len(completion) + 8)
        assert tiny_model.config._attn_implementation == "flex_attention"  # restored afterwards
    finally:
        tiny_model.config._attn_implementation = "sdpa"
    reference = teacher_forced(tiny_model, prompt, completion)
    for i, lg in enumerate(out.position_logits[0]):
        torch.testing.assert_close(lg, reference[i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("files, expected", corpus_sets(dict(files=8, parallel=6), dict(files=30, parallel=15)))
def test_corpus_replay_reproduces_every_file(tokenizer, files, expected):
    """All 30 files in one batch: each sequence exactly, decode steps equal to its critical path."""
    model = TableLM(tokenizer)
    tags = model.config.multiverse_tag_ids
    prompts, completions = [], []
    for path in files:
        t = read_transcript(path)
        ids = tokenizer.encode(t.completion)
        completions.append(ids[:well_formed_prefix(ids, tags)])
        prompts.append(tokenizer.encode(t.prompt))
    assert len(completions) == expected["files"]
    out = run_engine(model, prompts, forced=completions, max_new_tokens=max(map(len, completions)) + 8)
    width = max(map(len, prompts))
    parallel_files = 0
    for b, completion in enumerate(completions):
        got = out.sequences[b, width:width + len(completion)].tolist()
        assert got == completion, f"{files[b]} differs"
        stats = out.multiverse[b]
        assert stats["steps"] == parse(completion, tags, allow_truncated=True).critical_path
        parallel_files += stats["forks"] > 0
    assert parallel_files >= expected["parallel"]


def test_batch_of_different_structures_equals_one_at_a_time(tiny_model, tokenizer):
    pairs = [encode_pair(tokenizer, t) for t in (TEXT, NESTED, "No structure here, just text.")]
    batched = tiny_model.generate(
        torch.nn.utils.rnn.pad_sequence([torch.tensor(p[0]).flip(0) for p in pairs], batch_first=True).flip(1),
        forced_completions=[c for _, c in pairs], return_dict_in_generate=True, output_logits=True,
        max_new_tokens=200)
    for b, (prompt, completion) in enumerate(pairs):
        single = tiny_model.generate(torch.tensor([prompt]), forced_completions=[completion],
                                     return_dict_in_generate=True, output_logits=True, max_new_tokens=200)
        assert batched.multiverse[b]["steps"] == single.multiverse[0]["steps"]
        for a, s in zip(batched.position_logits[b], single.position_logits[0]):
            torch.testing.assert_close(a, s, atol=1e-4, rtol=0)


def test_sampling_is_seeded_per_prompt(tiny_model, tokenizer):
    prompt, _ = encode_pair(tokenizer, "")
    kwargs = dict(do_sample=True, temperature=0.9, top_k=50, top_p=0.95, min_p=0.01, repetition_penalty=1.1,
                  max_new_tokens=24, tokenizer=tokenizer, return_dict_in_generate=True)
    a = tiny_model.generate(torch.tensor([prompt]), seed=7, **kwargs)
    b = tiny_model.generate(torch.tensor([prompt]), seed=7, **kwargs)
    c = tiny_model.generate(torch.tensor([prompt]), seed=8, **kwargs)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)
    both = tiny_model.generate(torch.tensor([prompt, prompt]), seed=7, **kwargs)
    assert torch.equal(both.sequences[:1, :a.sequences.shape[1]], a.sequences)
