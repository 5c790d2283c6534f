"""The published checkpoint as downloaded (plain qwen2, tags special): generate and eval work, keep the tags,
run no remote code unless asked, and never prompt (stdin closed)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from multiverse.cli import app

COMPLETION = "<Think>x</Think>4"  # what the chain model below writes after any prompt


@pytest.fixture(scope="module")
def chain_checkpoint(tmp_path_factory, qwen_tokenizer):
    """A plain-qwen2 checkpoint (as Multiverse-32B is laid out) rigged to write ``<Think>x</Think>4<|im_end|>``.

    Every layer's output projections are zero, so the last hidden state is the normalized embedding of the
    current token: the model is a bigram table. Each chain token's embedding is a distinct axis, and the LM
    head maps that axis to the next token; every other token leads to ``<|im_end|>``.
    """
    from transformers import Qwen2ForCausalLM

    from multiverse.testing import plain_qwen2_checkpoint

    tok = qwen_tokenizer
    folder = plain_qwen2_checkpoint(tmp_path_factory.mktemp("chain") / "model", tok)
    model = Qwen2ForCausalLM.from_pretrained(folder)
    ids = [tok.encode(t, add_special_tokens=False)[0] for t in ["\n", "<Think>", "x", "</Think>", "4", "<|im_end|>"]]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 10.0  # every other token: axis 0, which leads to <|im_end|>
        head.zero_()
        head[ids[-1], 0] = 1.0
        for axis, (token, following) in enumerate(zip(ids, ids[1:]), 1):
            embed[token] = 0.0
            embed[token, axis] = 10.0
            head[following, axis] = 1.0
    model.save_pretrained(folder)
    return folder


def _cli(*args, timeout=300):
    # A fresh process with stdin closed: a "run custom code? [y/N]" prompt would fail it.
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "multiverse.cli", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_generate_on_the_plain_checkpoint_keeps_the_tags(chain_checkpoint, tmp_path):
    page = tmp_path / "t.html"
    result = _cli("generate", str(chain_checkpoint), "-p", "What is 2+2?", "--max-new-tokens", "12", "--json",
                  "--html", str(page))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(COMPLETION + "\n")  # special tags decoded, <|im_end|> left out
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["tokens"] == 5 and stats["budget"] == "total 12"
    assert "&lt;Think&gt;" in page.read_text()


def test_eval_on_the_plain_checkpoint_grades_after_think(chain_checkpoint, tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"problem": "What is 2+2?", "answer": "4"}\n{"problem": "What is 2+3?", "answer": "5"}\n')
    out = tmp_path / "eval"
    result = _cli("eval", str(chain_checkpoint), "--benchmark", str(bench), "--max-new-tokens", "8", "16",
                  "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2  # modes x budgets x problems
    for r in records:
        assert r["completion"] == COMPLETION and r["predicted"] == "4"
        assert r["correct"] == (r["answer"] == "4")
    summary = json.loads(result.stdout.strip().splitlines()[-1])["summary"]
    assert [(r["mode"], r["max_new_tokens"], r["accuracy"]) for r in summary] == [
        ("parallel", 8, 0.5), ("parallel", 16, 0.5), ("autoregressive", 8, 0.5), ("autoregressive", 16, 0.5)]
    # multiverse grade reads eval's records back to the same grades
    graded = CliRunner().invoke(app, ["grade", str(out / "records.jsonl")])
    total = json.loads(graded.stdout.splitlines()[-1])
    assert (total["graded"], total["correct"], total["no_answer"]) == (8, 4, 0)


def test_sequential_generate_honours_json_and_html(chain_checkpoint, tmp_path):
    page = tmp_path / "seq.html"
    result = CliRunner().invoke(app, ["generate", str(chain_checkpoint), "-p", "hi", "--sequential", "--json",
                                      "--html", str(page), "--preset", "multiverse-eval", "--max-new-tokens", "9",
                                      "--temperature", "0"])  # the preset samples; greedy keeps the chain
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert (stats["tokens"], stats["steps"], stats["forks"], len(stats["branches"])) == (5, 5, 0, 1)
    assert stats["budget"] == "critical-path 9"  # the preset's rule; one token per step when sequential
    assert result.stdout.startswith(COMPLETION + "\n") and "&lt;/Think&gt;" in page.read_text()


def test_a_mistyped_model_folder_is_reported_without_a_hub_lookup(tmp_path):
    result = CliRunner().invoke(app, ["generate", str(tmp_path / "no" / "such-model"), "-p", "hi"])
    assert result.exit_code == 1 and "no such folder" in result.output


def _copy(checkpoint, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for f in checkpoint.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def _poison(folder, model_type):
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig",
                                                    "AutoModelForCausalLM": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    marker = folder.parent / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n"
                                    "raise SystemExit('poisoned')\n")
    return marker


@pytest.mark.parametrize("model_type", ["qwen2", "multiverse"])
def test_remote_code_of_a_known_model_type_is_never_run(chain_checkpoint, tmp_path, model_type):
    folder = _copy(chain_checkpoint, tmp_path)
    marker = _poison(folder, model_type)
    result = CliRunner().invoke(app, ["generate", str(folder), "-p", "hi", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(COMPLETION + "\n") and not marker.exists()


def test_remote_code_of_an_unknown_model_needs_the_flag(chain_checkpoint, tmp_path):
    folder = _copy(chain_checkpoint, tmp_path)
    marker = _poison(folder, "evil")
    result = CliRunner().invoke(app, ["generate", str(folder), "-p", "hi"])
    assert result.exit_code == 1 and "--trust-remote-code" in result.output and not marker.exists()
    result = _cli("generate", str(folder), "-p", "hi", "--trust-remote-code")  # the user's choice: it runs
    assert result.returncode != 0 and marker.read_text() == "remote code ran"


def test_export_runs_no_remote_code_without_the_flag(chain_checkpoint, tmp_path):
    folder = _copy(chain_checkpoint, tmp_path)
    marker = _poison(folder, "evil")
    result = CliRunner().invoke(app, ["export", str(folder), str(tmp_path / "out"), "--no-verify"])
    assert result.exit_code == 1 and "--trust-remote-code" in result.output and not marker.exists()
    marker = _poison(folder, "qwen2")
    result = CliRunner().invoke(app, ["export", str(folder), str(tmp_path / "out2"), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert not marker.exists() and (tmp_path / "out2" / "config.json").is_file()
