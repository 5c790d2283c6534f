"""Resumable evaluation: kill -9 loses no finished completion, a rerun makes each missing one exactly once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.evaluation import RecordLog

PROBLEMS = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(12)]


@pytest.fixture
def setup(tiny_model, tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return model_dir, bench


def _args(model_dir, bench, out):
    return ["eval", str(model_dir), "--benchmark", str(bench), "--max-new-tokens", "24", "--batch-size", "1",
            "--out", str(out), "--no-progress"]


def _keys(lines):
    return [(r["mode"], r["max_new_tokens"], r["id"], r["sample"]) for r in map(json.loads, lines)]


def test_kill_and_resume_loses_nothing_and_repeats_nothing(setup, tmp_path):
    model_dir, bench = setup
    out = tmp_path / "run"
    records = out / "records.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "multiverse.cli", *_args(model_dir, bench, out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if records.is_file() and records.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"eval ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records.read_bytes()
    finished = before[:before.rfind(b"\n") + 1].decode().splitlines()  # a torn last line is not finished
    assert 3 <= len(finished) < 2 * len(PROBLEMS)

    result = CliRunner().invoke(app, _args(model_dir, bench, out))
    assert result.exit_code == 0, result.output
    after = records.read_text().splitlines()
    assert after[:len(finished)] == finished  # finished records kept, byte for byte
    keys = _keys(after)
    assert len(keys) == len(set(keys)) == 2 * len(PROBLEMS)
    assert set(keys) == {(m, 24, p["id"], 0) for m in ("parallel", "autoregressive") for p in PROBLEMS}

    # The same as a run never interrupted: a resumed completion is the one it would have been.
    whole = tmp_path / "whole"
    assert CliRunner().invoke(app, _args(model_dir, bench, whole)).exit_code == 0
    fresh = {k: json.loads(line)["completion"] for k, line in zip(_keys(after), after)}
    again = (whole / "records.jsonl").read_text().splitlines()
    assert {k: json.loads(line)["completion"] for k, line in zip(_keys(again), again)} == fresh
    # Rerunning a finished evaluation makes nothing new.
    assert CliRunner().invoke(app, _args(model_dir, bench, out)).exit_code == 0
    assert records.read_text().splitlines() == after


def test_torn_last_line_is_dropped_and_other_settings_refused(tmp_path):
    settings = {"model": "m", "benchmark": "b", "temperature": 0.0}
    log = RecordLog(tmp_path, settings)
    done = dict(id="a", sample=0, mode="parallel", max_new_tokens=8, completion="x")
    log.append(done)
    log.close()
    with (tmp_path / "records.jsonl").open("a") as f:
        f.write('{"id": "b", "sample": 0, "mode": "par')  # a kill mid-write
    log = RecordLog(tmp_path, settings)
    assert log.records == [done] and log.done == {("parallel", 8, "a", 0)}
    log.append(dict(done, id="b"))
    log.close()
    assert [json.loads(line)["id"] for line in (tmp_path / "records.jsonl").read_text().splitlines()] == ["a", "b"]
    with pytest.raises(ValueError, match=r"other settings \(temperature: 0.0 -> 0.6\)"):
        RecordLog(tmp_path, dict(settings, temperature=0.6))
