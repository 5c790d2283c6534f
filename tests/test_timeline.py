"""The HTML timeline of one generation: intervals from the engine's steps, and a page Chromium renders."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.generation.timeline import COLORS, active_counts, timeline_html, timeline_rows, write_timeline
from samples import NESTED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def replay(model, tokenizer, text, budget=None):
    prompt = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "Add."}],
                                                            add_generation_prompt=True, tokenize=False))
    completion = tokenizer.encode(text)
    out = model.generate(torch.tensor([prompt]), forced_completions=[completion], return_dict_in_generate=True,
                         max_new_tokens=budget or len(completion) + 8)
    return out.multiverse[0], tokenizer.decode(out.sequences[0, len(prompt):])


@pytest.fixture(scope="module")
def nested(tiny_model, tokenizer):
    return replay(tiny_model, tokenizer, NESTED)


def test_rows_account_for_every_token_and_step(nested):
    stats, _ = nested
    rows = timeline_rows(stats)
    assert [r["label"] for r in rows] == ["root", "1", "1.1", "1.2", "2"]  # tree order, full labels
    # The engine emits one token per branch per step, so the drawn bars must hold exactly each branch's tokens
    # and the band over the steps exactly the completion.
    for r in rows:
        assert sum(b - a + 1 for a, b in r["active"]) == r["branch"]["tokens"], r["label"]
    counts = active_counts(rows, stats["steps"])
    assert len(counts) == stats["steps"] and min(counts) >= 1
    assert sum(counts) == stats["tokens"] and max(counts) == 2
    root, path1 = rows[0], rows[1]
    assert [len(g["children"]) for g in root["groups"]] == [2] and root["groups"][0]["merged"]
    assert len(root["active"]) == 2 and len(path1["active"]) == 2  # both wait for their paths, then conclude
    assert root["active"][0][1] + 1 == root["groups"][0]["fork"]
    assert root["active"][1][0] == root["groups"][0]["merge"] + 1


def test_budget_cut_paths_are_marked(tiny_model, tokenizer):
    stats, text = replay(tiny_model, tokenizer, NESTED, budget=100)
    rows = {r["label"]: r for r in timeline_rows(stats)}
    assert not rows["1.1"]["branch"]["closed"] and not rows["1"]["groups"][0]["merged"]
    assert rows["root"]["span"][1] == stats["steps"]  # the root waits until the budget stops everything
    page = timeline_html(stats, text, "cut")
    assert page.count('class="cut"') == 3  # paths 1, 1.1 and 1.2; path 2 closed
    assert "token_budget_exhausted: 1" in page


def test_page_is_self_contained_and_escaped(nested, tmp_path):
    stats, text = nested
    path = write_timeline(tmp_path / "t.html", stats, text, title="<b>2 & 3</b>")
    page = path.read_text()
    assert "&lt;b&gt;2 &amp; 3&lt;/b&gt;" in page and "<b>2" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert page.count("<title>") >= len(stats["branches"])  # hover text per branch
    assert "&lt;Path&gt;" in page and "1.2: y is 4 and more" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_timeline_renders_in_headless_chromium(nested, tmp_path):
    stats, text = nested
    page = write_timeline(tmp_path / "timeline.html", stats, text, title="nested")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
           page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    for depth in (0, 1, 2):  # a bar of each depth was painted in its colour
        rgb = np.array([int(COLORS[depth][i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(axis=-1) <= 2).sum() > 200, f"no depth-{depth} bars on the screenshot"


def test_generate_cli_writes_html(tiny_model, tokenizer, tmp_path):
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    html = tmp_path / "gen.html"
    result = CliRunner().invoke(app, ["generate", str(folder), "--prompt", "2 + 2?", "--max-new-tokens", "6",
                                      "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert "<svg" in html.read_text() and "decode step" in html.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_generate_cli_refuses_cuda_graphs_on_a_cpu(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    result = CliRunner().invoke(app, ["generate", str(tmp_path), "--prompt", "2 + 2?", "--cuda-graphs"])
    assert result.exit_code == 2 and "CUDA device" in result.output
