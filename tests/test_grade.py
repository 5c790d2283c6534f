"""multiverse grade: real Multiverse-32B transcripts and JSONL completions, graded after </Think>."""

import json

import pytest
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.evaluation.grade_cli import grade_file
from multiverse.testing import corpus_file, corpus_files, full_corpus_files


def _run(*args):
    result = CliRunner().invoke(app, ["grade", *map(str, args)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_grades_the_vendored_transcripts():
    rows = _run(*corpus_files())
    *files, total = rows
    by = {r["file"].rsplit("/", 1)[-1]: r for r in files}
    # entry_1/10/13 close </Think> and end "the final answer is N" with the reference N; the other five were
    # cut by the budget inside <Think>, so they have no answer at all.
    assert [n for n, r in sorted(by.items()) if r["correct"]] == ["entry_1.txt", "entry_10.txt", "entry_13.txt"]
    assert by["entry_17.txt"]["predicted"] is None and by["entry_17.txt"]["reference"] == "468"
    assert total == {**total, "files": 8, "graded": 8, "correct": 3, "accuracy": 0.375, "no_answer": 5}
    assert total["blocks"] == sum(r["blocks"] for r in files) > 0 and total["ideal_parallelism"] > 1


def test_unfinished_thinking_is_graded_only_when_asked():
    path = corpus_file("entry_17")
    assert grade_file(path)["no_answer"] == 1
    row = grade_file(path, unfinished="whole")
    assert row["no_answer"] == 0 and row["predicted"] is not None


def test_grades_jsonl_completions(tmp_path):
    path = tmp_path / "records.jsonl"
    rows = [{"completion": "<Think>\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n</Goal>\n<Path>\n1: 7\n</Path>\n"
                           "<Conclusion>\n7\n</Conclusion>\n</Parallel>\n</Think>\nThe answer is 7.", "answer": "7"},
            {"completion": "<Think>\nIt is 7 surely", "answer": "7"},
            {"completion": "</Think>\nThe answer is (C).", "answer": "C", "kind": "choice"},
            {"completion": "<Think>x</Think>8", "answer": "9"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (row, total) = _run(path)
    assert (row["completions"], row["graded"], row["correct"], row["no_answer"], row["forked"]) == (4, 4, 2, 1, 1)
    assert total["accuracy"] == 0.5 and total["files"] == 1
    path.write_text('{"completion": "x"}\n')
    result = CliRunner().invoke(app, ["grade", str(path)])
    assert result.exit_code == 1 and "records.jsonl:1: a completion row needs" in result.output


@pytest.mark.corpus
@pytest.mark.skipif(not full_corpus_files(), reason="set MULTIVERSE_CORPUS to grade the whole corpus")
def test_grades_the_whole_corpus():
    *files, total = _run(*full_corpus_files())
    assert total["files"] == len(files) == len(full_corpus_files())
    # Each graded transcript either committed to an answer after </Think> or has none.
    assert all(r["no_answer"] == (r["predicted"] is None) for r in files)
