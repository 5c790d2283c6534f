"""multiverse eval: math-verify grading, budgets, parallel vs autoregressive, the table, JSON and plot."""

import json

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.evaluation import Problem, answer_region, evaluate, grade, load_benchmark, summarize, write_report
from samples import NESTED

FLAT = ("<Think>\nSplit it.\n<Parallel>\n<Goal>\n<Outline>\n1: first product\n</Outline>\n<Outline>\n"
        "2: second product\n</Outline>\n</Goal>\n<Path>\n1: 3 * 4 = 12\n</Path>\n<Path>\n2: 5 * 6 = 30\n</Path>\n"
        "<Conclusion>\n12 + 30 = 42\n</Conclusion>\n</Parallel>\n</Think>\nThe answer is {answer}.")


@pytest.mark.parametrize("completion, gold, correct, predicted", [
    ("<Think>\nsome 3 and 9\n</Think>\nThe answer is 7.", "7", True, "7"),
    ("<Think>\n7 looks right\n</Think>\nNo: it is 8.", "7", False, "8"),  # the thought's 7 is not the answer
    ("<Think>\nhalf\n</Think>\n0.5", r"\frac{1}{2}", True, "0.5"),
    ("<Think>\nhmm\n</Think>\n$\\boxed{\\frac{3}{4}}$", "0.75", True, r"\frac{3}{4}"),
    ("<Think>\nstill thinking about 5 and then 12", "12", False, None),  # cut by the budget: no answer yet
    ("Without tags the answer is 12", "12", True, "12"),
    ("<Think>\n</Think>\nI do not know.", "3", False, None),
    ("<Path>\n2: 4\n</Path>\n<Conclusion>\n3+4=7\n</Conclusion>", "7", True, "7"),
])
def test_grade_known_answers(completion, gold, correct, predicted):
    g = grade(completion, gold)
    assert (g.correct, g.predicted) == (correct, predicted)


def test_answer_region_removes_tags_and_thinking():
    assert answer_region("<Think>\n1\n</Think>\nx<Conclusion>2</Conclusion>").split() == ["x", "2"]
    assert "<Path>" not in answer_region("<Path>\n1: 3\n</Path>")


@pytest.mark.parametrize("line, message", [
    ('{"problem": "1+1?"}', "answer"),
    ('{"text": "1+1?", "answer": "2"}', "problem"),
    ("not json", "not a JSON object"),
    ('{"problem": "x?", "answer": " "}', "cannot read the reference answer"),
])
def test_load_benchmark_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "b.jsonl"
    path.write_text('{"problem": "2+2?", "answer": 4}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"b\.jsonl:3: .*{message}"):
        load_benchmark(path)


def test_load_benchmark_fields_and_limit(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": "p1", "question": "2+2?", "answer": 4}\n{"prompt": "1/2?", "solution": "0.5"}\n')
    assert load_benchmark(path) == [Problem("p1", "2+2?", "4"), Problem("2", "1/2?", "0.5")]
    assert len(load_benchmark(path, limit=1)) == 1


def test_evaluate_grades_replayed_completions_per_budget(tiny_model, tokenizer, tmp_path):
    """Known completions replayed through the parallel engine: accuracy, budgets and statistics must follow."""
    problems = [Problem("a", "3*4 + 5*6?", "42"), Problem("b", "3*4 + 5*6?", "42"),
                Problem("c", "What is 12?", "12"), Problem("d", "3*4 + 5*6?", "42")]
    forced = {"a": FLAT.format(answer=42), "b": FLAT.format(answer=41),
              "c": "<Think>\n" + NESTED + "\n</Think>\n12", "d": "<Think>\nNo split: 3*4=12, 5*6=30.\n</Think>\n42"}
    lengths = {k: len(tokenizer.encode(v, add_special_tokens=False)) for k, v in forced.items()}
    full = max(lengths.values()) + 4
    records = evaluate(tiny_model, tokenizer, problems, [10, full], modes=("parallel",), batch_size=3,
                       forced_completions=forced, progress=False)
    by = {(r["max_new_tokens"], r["id"]): r for r in records}
    assert [by[full, k]["correct"] for k in "abcd"] == [True, False, True, True]
    assert not any(by[10, k]["correct"] for k in "abcd")  # 10 tokens never reach an answer
    for k in "abcd":
        assert by[full, k]["tokens"] == lengths[k]
    # Cut at 10: with nothing to close, the whole budget; a block whose closing would not fit is not opened, so
    # the cut completions stop at the text before it (the engine's closing tags count toward the budget).
    assert by[10, "d"]["tokens"] == 10
    for k in "abc":
        assert by[10, k]["tokens"] < 10 and forced[k].startswith(by[10, k]["completion"])
        assert forced[k][len(by[10, k]["completion"]):].startswith("<Parallel>")
    for k in "abcd":  # the records keep the structure: the tokenizer's tags are special tokens
        assert by[full, k]["completion"] == forced[k]
    assert by[full, "a"]["forks"] == 1 and by[full, "c"]["forks"] == 2 and by[full, "d"]["forks"] == 0
    assert by[full, "a"]["steps"] < by[full, "a"]["tokens"] and by[full, "d"]["steps"] == by[full, "d"]["tokens"]
    rows = {r["max_new_tokens"]: r for r in summarize(records)}
    assert rows[full]["accuracy"] == 0.75 and rows[10]["accuracy"] == 0.0
    tokens, steps = sum(lengths.values()), sum(by[full, k]["steps"] for k in "abcd")
    assert rows[full]["parallelism"] == pytest.approx(tokens / steps) and rows[full]["parallelism"] > 1
    paths = write_report(records, summarize(records), tmp_path, benchmark="replayed", model="tiny", settings={})
    assert "| parallel | 10 | 0.0% | 0 | 4 |" in paths["table"].read_text()
    assert f"| parallel | {full} | 75.0% | 3 | 4 |" in paths["table"].read_text()


def test_eval_cli_writes_table_json_and_plot(tiny_model, tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    bench = tmp_path / "mini.jsonl"
    bench.write_text("\n".join(json.dumps(r) for r in [
        {"problem": "What is 3 + 4?", "answer": "7"}, {"question": "What is 2 * 5?", "answer": 10},
        {"problem": "Half of one?", "answer": "\\frac{1}{2}"}]) + "\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--benchmark", str(bench), "--max-new-tokens", "4,8",
                                      "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [(r["mode"], r["max_new_tokens"]) for r in data["summary"]] == [
        (m, b) for m in ("parallel", "autoregressive") for b in (4, 6, 8)]
    assert len(data["records"]) == 2 * 3 * 3
    for row in data["summary"]:
        mine = [r for r in data["records"] if (r["mode"], r["max_new_tokens"]) == (row["mode"], row["max_new_tokens"])]
        assert row["accuracy"] == sum(r["correct"] for r in mine) / 3
        assert row["mean_tokens"] <= row["max_new_tokens"]
        if row["mode"] == "autoregressive":
            assert row["mean_steps"] == row["mean_tokens"] and row["parallelism"] == 1.0
    table = (out / "results.md").read_text()
    assert table.count("| parallel |") == 3 and table.count("| autoregressive |") == 3
    image = imread(out / "accuracy_vs_budget.png")
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert np.asarray(image)[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_eval_cli_rejects_bad_budgets(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"problem": "1?", "answer": 1}\n')
    result = CliRunner().invoke(app, ["eval", "unused", "--benchmark", str(bench), "--max-new-tokens", "0,abc"])
    assert result.exit_code != 0 and "--max-new-tokens" in result.output
