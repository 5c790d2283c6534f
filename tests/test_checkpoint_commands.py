"""convert, stats --tokenizer and export on a checkpoint laid out as Multiverse-32B (plain qwen2, special tags)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.modeling_multiverse import TAGS
from multiverse.testing import corpus_files, full_corpus_files


def test_convert_a_checkpoint_with_the_tags_changes_only_the_config(plain_checkpoint, tmp_path):
    out = tmp_path / "mv"
    result = CliRunner().invoke(app, ["convert", str(plain_checkpoint), str(out)])
    assert result.exit_code == 0, result.output
    before, after = load_file(plain_checkpoint / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / "tokenizer.json").read_text())["model"] == \
        json.loads((plain_checkpoint / "tokenizer.json").read_text())["model"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "multiverse" and "AutoModelForCausalLM" in config["auto_map"]
    assert config["multiverse_tag_ids"] == list(range(151665, 151677)) and config["vocab_size"] == 151680
    assert (out / "modeling_multiverse.py").is_file()
    added = {t["content"]: t["special"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    assert all(added[t] for t in TAGS)  # still special, as published


def test_stats_counts_real_tokens_with_the_checkpoint_tokenizer(plain_checkpoint):
    files = corpus_files()[:2]
    chars = CliRunner().invoke(app, ["stats", *files, "--json"])
    tokens = CliRunner().invoke(app, ["stats", *files, "--json", "--tokenizer", str(plain_checkpoint)])
    assert chars.exit_code == 0 and tokens.exit_code == 0, tokens.output
    by_chars, by_tokens = ([json.loads(line) for line in r.stdout.splitlines()] for r in (chars, tokens))
    for c, t in zip(by_chars[:-1], by_tokens[:-1]):
        assert (c["units"], t["units"]) == ("chars", "tokens")
        assert c["blocks"] == t["blocks"] > 0 and t["length"] < c["length"] / 2  # tags counted as one token each


@pytest.mark.corpus
@pytest.mark.corpus
@pytest.mark.skipif(not full_corpus_files(), reason="set MULTIVERSE_CORPUS to check the whole corpus")
def test_the_reference_budget_bounds_the_critical_path(plain_checkpoint):
    """The reference run stopped at 8000 tokens of critical path (not of all tokens): with the real tokenizer,
    13 of the 30 AIME24 transcripts have exactly that critical path; those that forked hold more tokens in total,
    which a budget on all tokens would have cut."""
    result = CliRunner().invoke(app, ["stats", *full_corpus_files(), "--json", "--tokenizer", str(plain_checkpoint)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()][:-1]
    at_budget = [r for r in rows if r["critical_path"] == 8000]
    assert len(at_budget) == 13
    assert all((r["length"] > 8000) == (r["blocks"] > 0) for r in at_budget)
    assert sum(r["length"] > 8000 for r in at_budget) >= 5


@pytest.mark.slow
def test_export_the_plain_checkpoint(plain_checkpoint, tmp_path):
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(plain_checkpoint), str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "multiverse" and config["multiverse_tag_ids"] == list(range(151665, 151677))
