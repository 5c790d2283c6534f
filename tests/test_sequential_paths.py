"""One engine for both modes: ``sequential_paths=True`` decodes a block's paths one after another."""

import torch

from batching_helpers import TWO_BLOCKS, prompts_and_completions, run, table_model, tag_ids
from engine_helpers import run_engine
from mock_lm import TableLM
from samples import NESTED, TEXT


def test_sequential_replay_writes_the_same_tokens_one_per_step(tiny_model, tokenizer):
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, TEXT, TWO_BLOCKS])
    kwargs = dict(max_new_tokens=max(len(c) for c in forced) + 8, output_logits=True)
    par_out, parallel = run(tiny_model, prompts, forced, **kwargs)
    seq_out, sequential = run(tiny_model, prompts, forced, sequential_paths=True, max_batch_rows=2, **kwargs)
    for p, (s, q) in enumerate(zip(sequential, parallel)):
        assert s["completion"] == q["completion"] == forced[p]
        assert s["steps"] == s["tokens"] == len(forced[p]) > q["steps"]  # autoregressive: one token per step
        assert s["kv_slots"] == q["kv_slots"] and s["forks"] == q["forks"]
        # the same positions and visibility: every written token's logits equal the parallel run's
        for a, b in zip(seq_out.position_logits[p], par_out.position_logits[p]):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def greedy_nesting_model(tokenizer):
    """A table model whose greedy choices open a two-path block wherever allowed, nested to max_depth."""
    ids = tag_ids(tokenizer)
    word, colon, nl, one = (tokenizer.encode(s)[0] for s in (" the", ":", "\n", "1"))
    eos = tokenizer.eos_token_id
    prefs = {ids["<Parallel>"]: [ids["<Goal>"]], ids["<Goal>"]: [ids["<Outline>"]], ids["<Outline>"]: [one],
             one: [ids["</Outline>"]], ids["</Outline>"]: [ids["<Outline>"], ids["</Goal>"]], ids["</Goal>"]: [word],
             colon: [ids["<Parallel>"], word], nl: [word], ids["</Conclusion>"]: [ids["</Parallel>"]],
             ids["</Parallel>"]: [eos, word], word: [ids["</Path>"], ids["</Conclusion>"], word, eos]}
    # greedy takes the first the grammar allows; rows without a preference write a word
    return table_model(tokenizer, {a: (b, False) for a, b in prefs.items()}, default=word), word


def test_sequential_greedy_decoding_equals_parallel_greedy(tokenizer):
    model, word = greedy_nesting_model(tokenizer)
    prompts = [[word] * (1 + 3 * i) + [tag_ids(tokenizer)["<Parallel>"]] for i in range(3)]  # each opens a block
    kwargs = dict(max_new_tokens=200, max_depth=2, max_branches=2, tokenizer=tokenizer,
                  eos_token_id=tokenizer.eos_token_id)
    parallel = run(model, prompts, **kwargs)[1]
    sequential = run(model, prompts, sequential_paths=True, **kwargs)[1]
    assert all(r["forks"] == 3 and r["max_depth"] == 2 for r in parallel)  # a block, two nested ones
    for s, q in zip(sequential, parallel):
        assert s["completion"] == q["completion"] and s["steps"] == s["tokens"]


def test_sequential_paths_live_one_at_a_time(tokenizer):
    prompts, forced = prompts_and_completions(tokenizer, [NESTED])

    class Live:
        def __init__(self):
            self.most = 0

        def on_token(self, branch, token):
            pass

        def on_fork(self, parent, children):
            self.most = max(self.most, sum(c.active for c in children))

        def on_merge(self, parent, children):
            pass

        def end(self):
            pass

    live = Live()
    run_engine(TableLM(tokenizer), prompts, forced=forced, sequential_paths=True, streamer=live,
               max_new_tokens=len(forced[0]) + 8)
    assert live.most == 1
