"""Continuous batching: more prompts than cache rows, each result identical to that prompt decoded alone."""

import pytest
import torch

from batching_helpers import SHORT, TWO_BLOCKS, alone, prompts_and_completions, run, table_model, tag_ids
from engine_helpers import run_engine
from multiverse.modeling_multiverse.parser import parse
from samples import NESTED, TEXT

IDLE_ROWS = {"max_batch_rows": 3, "max_live_samples": 1}  # two cache rows wait empty while one prompt decodes


@pytest.mark.parametrize("static, rows", [(False, {}), (True, {}), (False, IDLE_ROWS)],
                         ids=["eager", "static-step", "idle-rows"])
def test_forced_replays_more_prompts_than_rows_equal_each_alone(tiny_model, tokenizer, static, rows):
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, SHORT, TEXT, TWO_BLOCKS, SHORT + SHORT])
    kwargs = dict(max_new_tokens=max(len(c) for c in forced) + 8, output_logits=True)
    out, batched = run(tiny_model, prompts, forced, static_decode=static, **({"max_batch_rows": 2} | rows), **kwargs)
    if static:  # the static (CUDA-graph) step ran over 2 cache rows
        assert tiny_model._multiverse_static_decode[0].batch_index.shape[0] == 2
    lengths = {len(c) for c in forced}
    assert max(lengths) >= 4 * min(lengths)
    reference = alone(tiny_model, prompts, forced, **kwargs)
    for p, (got, want) in enumerate(zip(batched, reference)):
        assert got["completion"] == forced[p]
        assert got == want
    for p in range(len(prompts)):  # every written token's logits equal the prompt's own run
        single = run_engine(tiny_model, [prompts[p]], forced=[forced[p]], **kwargs).position_logits[0]
        for a, b in zip(out.position_logits[p], single):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_greedy_decoding_with_tokenizer_seeds_equals_each_alone(tiny_model, tokenizer):
    prompts, _ = prompts_and_completions(tokenizer, ["", "", "", ""])
    kwargs = dict(max_new_tokens=20, tokenizer=tokenizer)
    assert run(tiny_model, prompts, max_batch_rows=3, **kwargs)[1] == alone(tiny_model, prompts, **kwargs)


def branching_model(tokenizer):
    """A table model whose every choice is a coin flip between structure and text: sampled runs fork, nest
    and end at different lengths."""
    ids = tag_ids(tokenizer)
    word, colon, nl, one = (tokenizer.encode(s)[0] for s in (" the", ":", "\n", "1"))
    eos = tokenizer.eos_token_id
    prefs = {ids["<Parallel>"]: [ids["<Goal>"]], ids["<Goal>"]: [ids["<Outline>"]], ids["<Outline>"]: [one],
             one: [ids["</Outline>"]], ids["</Outline>"]: [ids["</Goal>"], ids["<Outline>"]], ids["</Goal>"]: [word],
             colon: [ids["<Parallel>"], word], word: [word, ids["</Path>"], nl, ids["</Conclusion>"], eos],
             nl: [word, ids["<Parallel>"], ids["</Parallel>"]], ids["</Path>"]: [nl],
             ids["</Conclusion>"]: [ids["</Parallel>"]], ids["</Parallel>"]: [word, eos]}
    # far above the rest of the vocabulary (0): a draw among the choices
    return table_model(tokenizer, {a: (b, True) for a, b in prefs.items()}), word


def test_seeded_sampling_of_nested_structures_equals_each_alone_whatever_the_rows(tokenizer):
    model, word = branching_model(tokenizer)
    prompts = [[word] * (1 + 4 * i) for i in range(5)]
    kwargs = dict(max_new_tokens=120, do_sample=True, max_depth=2, max_path_tokens=30, tokenizer=tokenizer,
                  eos_token_id=tokenizer.eos_token_id)
    reference = alone(model, prompts, n=2, seed=11, **kwargs)
    assert sum(r["forks"] for r in reference) >= 3 and max(r["max_depth"] for r in reference) == 2
    assert len({len(r["completion"]) for r in reference}) >= 3  # rows end at different lengths
    for rows in (1, 2, 3, None):
        assert run(model, prompts, num_return_sequences=2, seed=11, max_batch_rows=rows, **kwargs)[1] == reference
    # spare cache rows: a prompt is admitted once enough samples (not whole prompts) have ended
    assert run(model, prompts, num_return_sequences=2, seed=11, max_batch_rows=4, max_live_samples=3,
               **kwargs)[1] == reference


def test_a_row_that_would_overflow_ends_its_prompt_with_a_counted_event(tiny_model, tokenizer):
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, SHORT, TEXT])
    slots = 1 + max(len(p) for p in prompts) + 40  # fewer than NESTED and TEXT need
    kwargs = dict(max_new_tokens=max(len(c) for c in forced) + 8)
    _, rows = run(tiny_model, prompts, forced, max_batch_rows=2, kv_row_slots=slots, **kwargs)
    reference = alone(tiny_model, prompts, forced, **kwargs)
    tags = tiny_model.config.multiverse_tag_ids
    for p, (got, want) in enumerate(zip(rows, reference)):
        if 1 + len(prompts[p]) + len(forced[p]) <= slots:
            assert got == want and "kv_row_full" not in got["events"]
            continue
        assert got["events"]["kv_row_full"] == 1
        assert got["kv_slots"] <= slots - 1  # slot 0 is scratch
        assert got["tokens"] < len(forced[p])
        k = next(i for i, (a, b) in enumerate(zip(got["completion"], forced[p])) if a != b)
        assert got["completion"][k] in tags  # the replay went on until the cut closed it with tags
        result = parse(prompts[p] + got["completion"], tags)
        assert not [r for r in result.repairs if r.rule == "truncated"]  # closed, not cut mid-structure


class PromptLog:
    """A branch streamer that follows every prompt of a continuous batch by ``branch.prompt``."""

    def __init__(self):
        self.tokens, self.events, self.open_forks = {}, [], {}

    def on_prompt_start(self, prompt, roots):
        self.events.append(("start", prompt, {p: n for p, n in self.open_forks.items() if n}))

    def on_token(self, branch, token):
        self.tokens.setdefault(branch.prompt, []).append(token)

    def on_fork(self, parent, children):
        self.open_forks[parent.prompt] = self.open_forks.get(parent.prompt, 0) + 1

    def on_merge(self, parent, children):
        self.open_forks[parent.prompt] -= 1

    def on_prompt_end(self, prompt):
        self.events.append(("end", prompt, None))

    def end(self):
        self.events.append(("done", None, None))


def test_admission_while_another_row_is_mid_block_and_streams_by_prompt(tiny_model, tokenizer):
    # prompt 0 forks at its step 29 and merges after step 100; prompt 1 ends at step 34, mid-block
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, SHORT + SHORT, SHORT, SHORT + " More."])
    log = PromptLog()
    kwargs = dict(max_new_tokens=max(len(c) for c in forced) + 8)
    _, rows = run(tiny_model, prompts, forced, max_batch_rows=2, streamer=log, **kwargs)
    assert rows == alone(tiny_model, prompts, forced, **kwargs)
    starts = [(p, busy) for kind, p, busy in log.events if kind == "start"]
    assert [p for p, _ in starts] == [0, 1, 2, 3]
    assert any(busy.get(0) for p, busy in starts if p >= 2)  # admitted while prompt 0 had paths open
    ends = [p for kind, p, _ in log.events if kind == "end"]
    assert sorted(ends) == [0, 1, 2, 3] and ends[-1] == 0 and log.events[-1][0] == "done"
    for p in range(len(prompts)):  # streamed tokens of each prompt: its completion's tokens
        assert sorted(log.tokens[p]) == sorted(rows[p]["completion"])


def test_max_batch_rows_must_be_positive_and_rows_must_hold_the_prompts(tiny_model, tokenizer):
    prompts, _ = prompts_and_completions(tokenizer, ["", ""])
    with pytest.raises(ValueError, match="max_batch_rows=0"):
        run_engine(tiny_model, prompts, max_batch_rows=0, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=f"kv_row_slots=5 cannot hold a {len(prompts[1])}-token prompt"):
        run_engine(tiny_model, prompts, kv_row_slots=5, tokenizer=tokenizer)


@pytest.mark.parametrize("share", [True, False])
def test_forced_completions_per_output_row_replay_each_sample(tiny_model, tokenizer, share):
    """``num_return_sequences`` samples of a prompt can replay different structures (benchmarks/throughput.py),
    over one copy of the prompt's KV (``share_prompt_rows=True``) or one per sample (False)."""
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, SHORT, TEXT, SHORT + SHORT])
    prompts = prompts[:2]
    kwargs = dict(num_return_sequences=2, do_sample=True, max_new_tokens=max(len(c) for c in forced) + 8)
    _, rows = run(tiny_model, prompts, forced, max_batch_rows=1, share_prompt_rows=share, **kwargs)
    assert [r["completion"] for r in rows] == forced
    if share:
        assert rows[0]["kv_slots"] == rows[1]["kv_slots"] == len(prompts[0]) + len(forced[0]) + len(forced[1])
    else:
        assert [r["kv_slots"] for r in rows] == [len(prompts[r // 2]) + len(forced[r]) for r in range(4)]
    drop = {"kv_slots", "seconds"}
    shared = run(tiny_model, prompts, forced, max_batch_rows=3, share_prompt_rows=not share, **kwargs)[1]
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in shared]  # the same rows either way


def test_default_rows_hold_every_prompt_that_fits_in_memory(tiny_model):
    from multiverse.modeling_multiverse.engine_options import default_batch_rows

    assert default_batch_rows(tiny_model, 5, 1000, "cpu") == 5  # tiny rows: the whole batch at once
    assert default_batch_rows(tiny_model, 5, 10 ** 15, "cpu") == 1  # rows larger than memory: one at a time


def test_on_prompt_done_hands_each_prompt_its_rows_as_it_finishes(tokenizer):
    model, word = branching_model(tokenizer)
    prompts = [[word] * (1 + 4 * i) for i in range(4)]
    kwargs = dict(max_new_tokens=80, do_sample=True, max_depth=2, max_path_tokens=30, tokenizer=tokenizer,
                  eos_token_id=tokenizer.eos_token_id, num_return_sequences=2, seed=5)
    calls, log = [], PromptLog()

    def done(prompt, results):
        calls.append((prompt, results, len(log.events)))

    out, rows = run(model, prompts, max_batch_rows=2, streamer=log, on_prompt_done=done, **kwargs)
    assert sorted(p for p, _, _ in calls) == [0, 1, 2, 3]
    ended = [p for kind, p, _ in log.events if kind == "end"]  # per freed cache row (one per sample here)
    last = {p: i for i, p in enumerate(ended)}
    assert [p for p, _, _ in calls] == sorted(last, key=last.get)  # as each prompt's last row ended
    assert all(seen < len(log.events) - 1 for _, _, seen in calls[:-1])
    for prompt, results, _ in calls:
        assert [r.row for r in results] == [2 * prompt, 2 * prompt + 1]
        for r in results:  # what the final output holds for that row
            assert r.completion == rows[r.row]["completion"]
            assert r.multiverse is out.multiverse[r.row]


def test_one_seed_per_output_row_seeds_each_row_as_seed_plus_row_would(tokenizer):
    model, word = branching_model(tokenizer)
    prompts = [[word] * (1 + 4 * i) for i in range(3)]
    kwargs = dict(max_new_tokens=60, do_sample=True, max_depth=2, max_path_tokens=30, tokenizer=tokenizer,
                  eos_token_id=tokenizer.eos_token_id)
    by_offset = run(model, prompts, seed=7, **kwargs)[1]
    assert run(model, prompts, seed=[7, 8, 9], **kwargs)[1] == by_offset
    reversed_seeds = run(model, prompts, seed=[9, 8, 7], **kwargs)[1]
    assert reversed_seeds[0] == alone(model, prompts[:1], seed=9, **kwargs)[0]
    with pytest.raises(ValueError, match=r"seed=\[1, 2\]: give one int .* one int per output row \(3\)"):
        run_engine(model, prompts, seed=[1, 2], **kwargs)


def test_samples_get_rows_of_their_own_by_default_only_where_prompts_wait_for_memory(tiny_model, tokenizer,
                                                                                   monkeypatch):
    from multiverse.modeling_multiverse import engine

    prompts, forced = prompts_and_completions(tokenizer, [NESTED, SHORT, TEXT, SHORT + SHORT])
    kwargs = dict(num_return_sequences=2, do_sample=True, max_new_tokens=max(len(c) for c in forced) + 8)

    def layout(**extra):  # kv_slots tells them apart: a shared row holds both samples' tokens
        rows = run(tiny_model, prompts[:2], forced, **kwargs, **extra)[1]
        return "shared" if rows[0]["kv_slots"] == rows[1]["kv_slots"] > len(prompts[0]) + len(forced[0]) else "own"

    assert layout() == "shared"  # every prompt fits at once: nothing waits for a freed row
    assert layout(max_batch_rows=1) == "shared"  # rows the caller sized keep their meaning
    monkeypatch.setattr(engine, "default_batch_rows", lambda model, units, capacity, device: 1)
    assert layout() == "own"  # memory for one prompt's row at a time: each sample frees its own row
    assert layout(share_prompt_rows=True) == "shared"
