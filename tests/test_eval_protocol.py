"""eval's protocol settings: K samples (avg@K, stderr, pass@K), budget rules, benchmarks, CLI first-hour items."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.evaluation import Problem, evaluate, grade_choice, load_benchmark, summarize
from multiverse.evaluation.runner import budget_kwargs
from samples import TEXT

PROBLEMS = [Problem("a", "What is 3 + 4?", "7"), Problem("b", "What is 2 * 5?", "10")]


def _record(pid, sample, correct, forks=0, tokens=10, critical=10):
    return dict(id=pid, sample=sample, mode="parallel", max_new_tokens=8, budget="critical-path", correct=correct,
                predicted="1" if correct else None, tokens=tokens, steps=critical, forks=forks,
                critical_path=critical, seconds=1.0)


def test_summary_avg_at_k_stderr_pass_at_k():
    # Problem a: 3 of 4 correct; b: 0 of 4; c: 4 of 4. Shares 0.75, 0, 1.
    records = [_record("a", s, s < 3, forks=s % 2, tokens=30, critical=20) for s in range(4)] + \
              [_record("b", s, False) for s in range(4)] + [_record("c", s, True) for s in range(4)]
    (row,) = summarize(records)
    assert row["accuracy"] == pytest.approx(1.75 / 3)
    shares = [0.75, 0.0, 1.0]
    mean = sum(shares) / 3
    assert row["stderr"] == pytest.approx((sum((s - mean) ** 2 for s in shares) / 2 / 3) ** 0.5)
    assert row["pass_at_k"] == pytest.approx(2 / 3) and row["samples"] == 4 and row["problems"] == 3
    assert row["trigger_rate"] == pytest.approx(2 / 12) and row["budget"] == "critical-path"
    assert row["degree"] == pytest.approx((4 * 30 + 8 * 10) / (4 * 20 + 8 * 10))
    assert row["mean_critical_path"] == pytest.approx((4 * 20 + 8 * 10) / 12)


def test_sampling_is_seeded_per_problem_and_sample(tiny_model, tokenizer):
    sampling = dict(temperature=1.0, top_p=0.95, seed=3)
    runs = [evaluate(tiny_model, tokenizer, PROBLEMS, [12], ("parallel", "autoregressive"), batch_size=bs,
                     sampling=dict(sampling), num_samples=3, progress=False) for bs in (2, 2, 1)]
    text = [{(r["mode"], r["id"], r["sample"]): r["completion"] for r in run} for run in runs]
    assert len(text[0]) == 2 * 2 * 3 and text[0] == text[1]  # reproducible
    assert len({text[0]["parallel", "a", s] for s in range(3)}) > 1  # samples differ
    # Rows of both modes are seeded by (problem, sample), not by the batch they decode in.
    assert text[2] == text[0]
    for r in runs[0]:
        assert r["degree_of_parallelism"] == pytest.approx(r["tokens"] / r["critical_path"], abs=1e-4)
    with pytest.raises(ValueError, match="greedy decoding repeats one completion"):
        evaluate(tiny_model, tokenizer, PROBLEMS, [4], num_samples=2, progress=False)


def test_critical_path_budget_bounds_steps_not_tokens(tiny_model, tokenizer):
    problems = [Problem("t", "Add them.", "38")]
    forced = {"t": "<Think>\n" + TEXT + "\n</Think>\n38"}
    n = len(tokenizer.encode(forced["t"], add_special_tokens=False))
    (full,) = evaluate(tiny_model, tokenizer, problems, [n + 4], ("parallel",), forced_completions=forced,
                       progress=False)
    steps = full["steps"]
    assert steps < n and full["correct"]
    (cp,) = evaluate(tiny_model, tokenizer, problems, [steps], ("parallel",), forced_completions=forced,
                     budget_rule="critical-path", progress=False)
    (total,) = evaluate(tiny_model, tokenizer, problems, [steps], ("parallel",), forced_completions=forced,
                        progress=False)
    assert cp["tokens"] == n and cp["correct"] and cp["budget"] == "critical-path"
    assert total["tokens"] <= steps < n and not total["correct"]
    assert budget_kwargs("parallel", 100, "critical-path") == dict(max_new_tokens=400, max_critical_path=100)
    assert budget_kwargs("autoregressive", 100, "critical-path") == dict(max_new_tokens=100)
    with pytest.raises(ValueError, match="choose from total, critical-path"):
        budget_kwargs("parallel", 100, "steps")


def test_benchmarks_from_parquet_gpqa_rows_and_names(tmp_path, monkeypatch):
    gpqa = {"Question": "Which is a noble gas?", "Correct Answer": "Neon", "Incorrect Answer 1": "Iron",
            "Incorrect Answer 2": "Salt", "Incorrect Answer 3": "Water", "Record ID": "rec1"}
    path = tmp_path / "gpqa.parquet"
    pd.DataFrame([gpqa]).to_parquet(path)
    (p,) = load_benchmark(path)
    letter = "ABCD"[p.choices.index("Neon")]
    assert p.id == "rec1" and p.answer == letter and f"{letter}) Neon" in p.problem
    assert load_benchmark(path)[0] == p  # the shuffle is seeded by the row
    assert grade_choice(f"<Think>\nhmm\n</Think>\nThe answer is ({letter}).", p.answer).correct
    rows = tmp_path / "mc.jsonl"
    rows.write_text(json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": "4"}) + "\n" +
                    json.dumps({"question": "1+1?", "choices": ["2", "3"], "answer": "Z"}) + "\n")
    with pytest.raises(ValueError, match=r"mc\.jsonl:2: the answer 'Z' is neither a letter A-B"):
        load_benchmark(rows)
    assert load_benchmark(rows, limit=1)[0].answer == "B"
    rows.write_text('{"id": 1, "problem": "a?", "answer": 1}\n{"id": 1, "problem": "b?", "answer": 2}\n')
    with pytest.raises(ValueError, match=r"mc\.jsonl:2: id '1' repeats the one of .*mc\.jsonl:1"):
        load_benchmark(rows)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(ValueError, match=r"aime24.*Hub is offline.*--benchmark aime24\.jsonl"):
        load_benchmark("aime24")
    with pytest.raises(FileNotFoundError, match="missing.parquet does not exist"):
        load_benchmark(tmp_path / "missing.parquet")


@pytest.fixture
def model_dir(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_eval_cli_space_separated_budgets_samples_and_preset(model_dir, tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n" for p in PROBLEMS))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--benchmark", str(bench), "--max-new-tokens=4", "8",
                                      "--max-new-tokens", "12,16", "--modes", "parallel", "--num-samples", "2", "--preset",
                                      "multiverse-eval", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert [r["max_new_tokens"] for r in data["summary"]] == [4, 8, 12, 16]
    assert all(r["samples"] == 2 and r["budget"] == "critical-path" for r in data["summary"])
    assert data["settings"]["temperature"] == 0.6 and data["settings"]["top_p"] == 0.95
    assert "| K |" in (out / "results.md").read_text() and len(data["records"]) == 4 * 2 * 2


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "--limit"),
    (["--num-samples", "2"], "greedy decoding repeats one completion"),
    (["--budget", "steps"], "choose from total, critical-path"),
    (["--max-total-tokens", "9"], "--max-total-tokens"),
    (["--top-p", "0.9"], "set --temperature too"),
    (["--user-template", "Solve it"], "no {question}"),
])
def test_eval_cli_refuses_bad_settings(model_dir, tmp_path, args, message):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"problem": "1?", "answer": 1}\n')
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--benchmark", str(bench), "--out",
                                      str(tmp_path / "o"), "--no-progress", *args])
    assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output


def test_autoregressive_mode_is_the_engine_decoding_paths_one_after_another(tiny_model, tokenizer):
    problems = [Problem("t", "Add them.", "38"), Problem("u", "Again.", "38")]
    forced = {"t": "<Think>\n" + TEXT + "\n</Think>\n38", "u": "<Think>\nno block\n</Think>\n38"}
    records = evaluate(tiny_model, tokenizer, problems, [400], ("parallel", "autoregressive"), batch_size=1,
                       forced_completions=forced, progress=False)
    by = {(r["mode"], r["id"]): r for r in records}
    for pid in ("t", "u"):
        par, ar = by["parallel", pid], by["autoregressive", pid]
        assert ar["completion"] == par["completion"] and ar["correct"] and par["correct"]
        assert ar["tokens"] == par["tokens"] and ar["steps"] == ar["tokens"]  # one token per step
        assert ar["critical_path"] == par["critical_path"]  # the structure's, as training lays it out
    assert by["parallel", "t"]["steps"] < by["autoregressive", "t"]["steps"] and by["autoregressive", "t"]["forks"] == 1
