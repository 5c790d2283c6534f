"""The tree, critical path and repairs ``generate`` returns come from the engine's own records (``row_tree``);
they equal what parsing the returned sequence again finds, for finished, cut, sampled and replayed rows."""

import pytest

from batching_helpers import SHORT, prompts_and_completions, table_model, tag_ids
from engine_helpers import run_engine
from multiverse.modeling_multiverse.generation_outputs import tree_dict
from multiverse.modeling_multiverse.parser import parse
from multiverse.testing import corpus_files
from multiverse.transcripts import read_transcript
from samples import NESTED, TEXT


def reparsed(prompt, completion, tags, decode=None) -> dict:
    """The reference: the summary's structure fields by parsing prompt + completion again. With ``decode`` the
    parse reads the labels the model wrote, as the engine's seeds do (its text checks, which the engine does not
    make, are left out of the repairs)."""
    result = parse(prompt + completion, tags)
    prompt_steps = parse(prompt, tags, allow_truncated=True).critical_path
    labelled = result if decode is None else parse(prompt + completion, tags, decode=decode)
    return {"repairs": [str(r) for r in result.repairs if r.index >= len(prompt)],
            "critical_path": result.critical_path - prompt_steps, "tree": tree_dict(labelled)}


def without_outline_labels(tree: dict) -> dict:
    """The engine names each outline by its path's label; a parse reads only a label the outline spells out."""
    stack = list(tree["blocks"])
    while stack:
        block = stack.pop()
        block["outlines"] = [""] * len(block["outlines"])
        stack.extend(b for p in block["paths"] for b in p["blocks"])
    return tree


def assert_rows_match(out, prompts, tags, n=1, decode=None):
    width = max(len(p) for p in prompts)  # the prompts are left-padded to it
    for r, stats in enumerate(out.multiverse):
        prompt = prompts[r // n]
        completion = out.sequences[r, width:width + stats["tokens"] + stats["closing_tags"]].tolist()
        want = reparsed(prompt, completion, tags, decode)
        got = {"repairs": stats["repairs"], "critical_path": stats["critical_path"],
               "tree": without_outline_labels(stats["tree"])}
        want["tree"] = without_outline_labels(want["tree"])
        assert got == want, f"row {r}"


@pytest.mark.parametrize("budget", [None, 12, 40, 75, 120])
def test_replays_finished_or_cut_anywhere(tiny_model, tokenizer, budget):
    """Forced replays of nested structures, cut by the token budget at a goal, inside paths, at a merge."""
    prompts, forced = prompts_and_completions(tokenizer, [NESTED, TEXT, SHORT, NESTED + "\n" + TEXT])
    longest = max(len(c) for c in forced)
    out = run_engine(tiny_model, prompts, forced=forced, max_new_tokens=budget or longest + 8, max_batch_rows=2)
    cuts = sum(s["events"].get("cut", 0) for s in out.multiverse)
    assert cuts >= {None: 0, 12: 0, 40: 2, 75: 2, 120: 1}[budget]
    assert_rows_match(out, prompts, tiny_model.config.multiverse_tag_ids)


def test_corpus_replays_including_ones_that_stop_mid_structure(tiny_model, tokenizer):
    tags = tiny_model.config.multiverse_tag_ids
    prompts, forced = [], []
    for path in corpus_files():
        t = read_transcript(path)
        prompts.append(tokenizer.encode(t.prompt)[-64:])
        forced.append(tokenizer.encode(t.completion)[:3000])
    out = run_engine(tiny_model, prompts, forced=forced, max_new_tokens=3100, max_batch_rows=4)
    assert any(s["repairs"] for s in out.multiverse)  # real output: repairs and truncations are compared too
    assert_rows_match(out, prompts, tags)


def test_sampled_nested_rows_with_path_budgets_and_samples(tokenizer):
    ids = tag_ids(tokenizer)
    word, one, nl = (tokenizer.encode(s)[0] for s in (" the", "1", "\n"))
    eos = tokenizer.eos_token_id
    prefs = {ids["<Parallel>"]: [ids["<Goal>"]], ids["<Goal>"]: [ids["<Outline>"]], ids["<Outline>"]: [one],
             one: [ids["</Outline>"]], ids["</Outline>"]: [ids["</Goal>"], ids["<Outline>"]], ids["</Goal>"]: [word],
             word: [word, ids["</Path>"], nl, ids["<Parallel>"], ids["</Conclusion>"], eos, ids["<Goal>"]],
             nl: [word, ids["<Parallel>"], ids["</Parallel>"]], ids["</Path>"]: [nl],
             ids["</Conclusion>"]: [ids["</Parallel>"]], ids["</Parallel>"]: [word, eos]}
    model = table_model(tokenizer, {a: (b, True) for a, b in prefs.items()})
    prompts = [[word] * (1 + 3 * i) for i in range(6)]
    for budget, structure in ((150, True), (40, True), (90, False)):
        out = run_engine(model, prompts, max_new_tokens=budget, do_sample=True, max_depth=2, max_path_tokens=25,
                         tokenizer=tokenizer, eos_token_id=eos, num_return_sequences=2, seed=3, max_batch_rows=3,
                         enforce_structure=structure)
        assert sum(s["forks"] for s in out.multiverse) >= 3
        assert_rows_match(out, prompts, model.config.multiverse_tag_ids, n=2)


def test_a_prompt_that_opens_a_block(tiny_model, tokenizer):
    opened = TEXT[:TEXT.index("</Goal>")]
    prompt = tokenizer.encode("Q:\n" + opened)
    rest = tokenizer.encode(TEXT[TEXT.index("</Goal>"):])
    for budget in (len(rest) + 4, 14):
        out = run_engine(tiny_model, [prompt], forced=[rest], max_new_tokens=budget)
        assert_rows_match(out, [prompt], tiny_model.config.multiverse_tag_ids)
        assert out.multiverse[0]["tree"]["blocks"][-1]["start"] < len(prompt)  # the prompt's block, continued


def random_structure_model(tokenizer, rng):
    """A table model that mostly follows the grammar, with a few random extra choices (stray tags, early ends)."""
    ids = tag_ids(tokenizer)
    word, nl, one, colon = (tokenizer.encode(s)[0] for s in (" the", "\n", "1", ":"))
    eos = tokenizer.eos_token_id
    base = {ids["<Parallel>"]: [ids["<Goal>"]], ids["<Goal>"]: [ids["<Outline>"]], ids["<Outline>"]: [one],
            one: [ids["</Outline>"]], ids["</Outline>"]: [ids["</Goal>"], ids["<Outline>"]], ids["</Goal>"]: [word],
            word: [word, ids["</Path>"], nl, ids["<Parallel>"], ids["</Conclusion>"], eos],
            nl: [word, ids["<Parallel>"], ids["</Parallel>"]], ids["</Path>"]: [nl],
            ids["</Conclusion>"]: [ids["</Parallel>"]], ids["</Parallel>"]: [word, eos], colon: [ids["<Parallel>"], word]}
    anything = list(ids.values()) + [word, nl, one, colon, eos]
    prefs = {t: (c + (rng.sample(anything, rng.randint(0, 2)) if rng.random() < 0.3 else []), True)
             for t, c in base.items()}
    return table_model(tokenizer, prefs), word, eos


@pytest.mark.parametrize("case", [25, 119] + list(range(12)))
def test_random_structures_sampled_with_random_limits(tokenizer, case):
    """Cases 25 and 119 found repairs reported in decoding order (paths interleave) rather than the sequence's."""
    import random

    rng = random.Random(case)
    model, word, eos = random_structure_model(tokenizer, rng)
    prompts = [[word] * rng.randint(1, 6) for _ in range(rng.randint(1, 4))]
    n = rng.choice([1, 2])
    kwargs = dict(max_new_tokens=rng.randint(10, 120), do_sample=True, max_depth=rng.randint(1, 3),
                  max_path_tokens=rng.choice([None, 8, 15, 30]), tokenizer=tokenizer, eos_token_id=eos,
                  num_return_sequences=n, seed=case, max_batch_rows=rng.choice([None, 1, 2]),
                  enforce_structure=rng.random() < 0.7, sequential_paths=rng.random() < 0.3)
    if kwargs["max_batch_rows"] is None:
        kwargs["share_prompt_rows"] = rng.choice([None, True, False])
    out = run_engine(model, prompts, **kwargs)
    assert_rows_match(out, prompts, model.config.multiverse_tag_ids, n=n, decode=tokenizer.decode)


def test_a_cut_names_the_empty_paths_it_opens_as_their_outlines_do(tokenizer):
    """A cut in a goal opens its paths empty; they take the labels the outlines spell out (they were numbered by
    place, whatever the outlines said), as the paths of a fork the model makes do."""
    from mock_lm import TableLM

    prompt = tokenizer.encode("Q:<Parallel>\n<Goal>\n<Outline>\n3: a\n</Outline>\n<Outline>\n5: b\n</Outline>")
    model = TableLM(tokenizer, default=tokenizer.encode(" the")[0])
    out = run_engine(model, [prompt], max_new_tokens=9, tokenizer=tokenizer)
    stats = out.multiverse[0]
    assert stats["events"]["cut"] == 1
    assert [p["label"] for p in stats["tree"]["blocks"][0]["paths"]] == ["3", "5"]
    assert_rows_match(out, [prompt], model.config.multiverse_tag_ids, decode=tokenizer.decode)
