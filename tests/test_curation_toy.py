"""The built-in toy task: deterministic, disjoint held-out split, valid traces, right answers, and the CLI."""

import json
import re

import pytest

from multiverse.curation.toy_task import exact_match, is_test_problem, make_examples, make_test_problems
from multiverse.curation.validate import canonicalize, strip_structure, validate_trace
from multiverse.modeling_multiverse.parser import parse


def reference_answer(question: str) -> tuple[int, list[str], list[str]]:
    """Recompute from the question text alone, independently of the generator: the count of dials ending
    in the back half, each dial's start symbol and each dial's end symbol."""
    steps = int(re.match(r"Turn each dial (\d+) steps", question).group(1))
    rings = ["abcdefghij", "klmnopqrst", "ABCDEFGHIJ", "KLMNOPQRST"]
    starts = [symbol for _, symbol in re.findall(r"^(\d+): (\w)$", question, re.M)]
    ends = []
    for ring, start in zip(rings, starts):
        position = ring.index(start)
        for _ in range(steps):
            position = (position + 1) % 10
        ends.append(ring[position])
    return sum(r.index(e) >= 5 for r, e in zip(rings, ends)), starts, ends


def test_deterministic_and_seeded():
    assert make_examples(50, seed=3) == make_examples(50, seed=3)
    assert make_examples(50, seed=3) != make_examples(50, seed=4)
    assert make_examples(5, seed=3, steps=8)[0]["multiverse_trace"].count("<Path>") >= 2


def test_held_out_problems_are_disjoint_from_training():
    train = {e["question"] for seed in range(3) for e in make_examples(400, seed=seed)}
    test = {e["question"] for seed in range(3) for e in make_test_problems(100, seed=seed)}
    # seeds vary the draw; only ~10 two-dial problems are held out, so some draws repeat across seeds
    assert train.isdisjoint(test) and len(test) >= 200
    assert all(is_test_problem(q) for q in test) and not any(is_test_problem(q) for q in train)
    with pytest.raises(ValueError, match="split='dev'"):
        make_examples(1, split="dev")
    with pytest.raises(ValueError, match="distinct train problems"):
        make_examples(10_000, min_paths=2, max_paths=2)


def test_traces_are_valid_exact_format_and_right():
    examples = make_examples(200, seed=0) + make_test_problems(50, seed=0)
    for e in examples:
        trace = e["multiverse_trace"]
        assert validate_trace(trace) == [] and canonicalize(trace) == trace
        result = parse(trace, strict=True)
        (block,) = result.all_blocks
        answer, starts, ends = reference_answer(e["question"])
        assert e["answer"] == str(answer) and len(block.paths) == len(ends) == e["paths"]
        for k, (path, start, end) in enumerate(zip(block.paths, starts, ends)):
            # path k turns dial k only: its start, then one ring step per symbol, to its end
            label, body = trace[path.tag_end:path.end].replace("</Path>", "").split(":", 1)
            symbols = body.split()
            assert label.strip() == str(k + 1) and symbols[0] == start and symbols[-1] == end
            assert len(symbols) == int(re.match(r"Turn each dial (\d+)", e["question"]).group(1)) + 1
        assert f"\n</Path>\n<Path>\n" in trace and trace.startswith("<Parallel>\n<Goal>\n<Outline>\n1:\n")
        # The sequential trace is the same reasoning without the structure (and the path labels).
        assert strip_structure(trace) == e["sequential_trace"]
    assert {e["paths"] for e in examples} == {2, 3, 4}
    assert exact_match("<Think>\n...\n</Think>\n 7\n", "7") and not exact_match("<Think>\n7\n</Think>\n17", "7")


def test_paths_carry_most_tokens():
    """Decoding paths in parallel pays: with four dials, a token step yields more than two tokens."""
    from multiverse.tokenization import train_tokenizer
    from multiverse.curation.toy_task import as_chat
    from multiverse.modeling_multiverse import tag_token_ids

    examples = make_examples(300, seed=0, min_paths=4, max_paths=4)
    tok = train_tokenizer([m["content"] for e in examples for m in as_chat(e)], vocab_size=300)
    tags = tag_token_ids(tok)
    lengths = critical = 0
    for e in examples:
        ids = tok.encode(as_chat(e)[1]["content"] + tok.eos_token)
        assert sum(tok.decode([i]).strip().isalpha() and len(tok.decode([i]).strip()) == 1
                   for i in ids) >= 4 * 18  # every ring symbol of the 4 paths is one token
        result = parse(ids, tags)
        lengths, critical = lengths + result.length, critical + result.critical_path
    assert lengths / critical > 2.0


def test_toy_data_cli_writes_jsonl_and_dataset(tmp_path):
    import datasets
    from typer.testing import CliRunner

    from multiverse.cli import app

    result = CliRunner().invoke(app, ["toy-data", str(tmp_path), "--train", "40", "--test", "10", "--seed", "2"])
    assert result.exit_code == 0, result.output
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert train == make_examples(40, seed=2)
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 10
    sft = datasets.load_from_disk(str(tmp_path / "sft"))
    assert len(sft["train"]) == len(sft["autoregressive"]) == 40
    assert sft["train"][0]["completion"][0]["content"].startswith("<Think>\n<Parallel>\n<Goal>\n")
    check = CliRunner().invoke(app, ["validate", str(tmp_path / "train.jsonl")])
    assert check.exit_code == 0, check.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"multiverse_trace": train[0]["multiverse_trace"].replace("</Goal>", "")}) + "\n")
    check = CliRunner().invoke(app, ["validate", str(bad)])
    assert check.exit_code == 1 and "bad.jsonl:1: [stray-tag] line" in check.output
