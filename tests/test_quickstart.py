"""The main job end to end, in its minute-long form: data, tokenizer, TRL training, export, fresh-process eval."""

import json

import pytest
from typer.testing import CliRunner

from multiverse.cli import app


@pytest.mark.slow
def test_quickstart_smoke_runs_the_whole_pipeline(tmp_path):
    out = CliRunner().invoke(app, ["quickstart", "--smoke", "--out", str(tmp_path / "qs")])
    assert out.exit_code == 0, out.output[-3000:] + repr(out.exception)
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert set(summary) >= {"accuracy", "parallelism", "speedup", "seconds"}
    results = json.loads((tmp_path / "qs" / "results.json").read_text())
    # the exported folder was reloaded in a fresh process through its own remote code
    assert results["model_class"].startswith("transformers_modules."), results["model_class"]
    assert results["problems"] == 8 and 0.0 <= results["accuracy"] <= 1.0
    # the reloaded remote code forks and merges: the reference completion replays exactly, in fewer steps
    replay = results["replay"]
    assert replay["exact"] and replay["forks"] == 1 and replay["steps"] < replay["tokens"]
    for name in ("multiverse", "autoregressive"):
        assert (tmp_path / "qs" / f"{name}-model" / "README.md").exists()
        assert results["training"][name]["steps"] == 4
