"""multiverse export: a Hub-ready folder that reloads offline in a fresh process (push: test_hub_push.py)."""

import json

import pytest
from huggingface_hub import ModelCard
from transformers import Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.hub_cards.export import export_model, is_exported, reload_in_fresh_process
from multiverse.tokenization import train_tokenizer
from samples import NESTED, RESULTS


@pytest.fixture(scope="module")
def source(tiny_model, tokenizer, tmp_path_factory):
    """A trained-model folder as the recipes leave it: weights, tokenizer, trainer_state.json."""
    folder = tmp_path_factory.mktemp("trained")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 7, "epoch": 1.0, "log_history": [
        {"loss": 0.5}]}))
    return folder


@pytest.mark.slow
def test_export_then_fresh_offline_reload_generates_in_parallel(source, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    out = tmp_path / "export"
    args = ["export", str(source), str(out), "--repo-id", "someone/mv-tiny", "--base-model", "Qwen/Qwen2.5-0.5B",
            "--license", "apache-2.0", "--eval-results", str(results), "--no-verify"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
                 "modeling_multiverse.py", "configuration_multiverse.py", "engine.py", "generation_api.py"):
        assert (out / name).is_file(), name
    assert is_exported(out)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["Qwen/Qwen2.5-0.5B"] and card.data.license == "apache-2.0"
    assert {r.metric_value for r in card.data.eval_results} == {0.915, 0.905, 2.498}
    assert "| optimizer steps | 7 |" in card.text  # read from trainer_state.json

    # The card's own usage snippet, run in a fresh interpreter with HF_HUB_OFFLINE=1; then a replayed
    # nested completion through the reloaded (remote-code) engine shows the forks.
    fresh = reload_in_fresh_process(out, forced_completion=NESTED)
    assert fresh["module"].startswith("transformers_modules"), fresh["module"]
    assert fresh["imported_package"] is False
    stats = fresh["stats"]
    assert stats["forks"] == 2 and stats["max_depth"] == 2 and stats["parallelism"] > 1
    assert stats["steps"] < stats["tokens"]
    assert fresh["completion"] == NESTED  # linearized in the training layout


def test_export_refuses_a_non_empty_folder(source, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(source, tmp_path, verify=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_bad_card_field_fails_before_writing(source, tmp_path):
    with pytest.raises(ValueError, match="base_model='/models/qwen' is not a Hub id"):
        export_model(source, tmp_path / "out", base_model="/models/qwen", verify=False)
    assert not (tmp_path / "out").exists()


def test_export_names_a_model_without_tags(tmp_path):
    plain = train_tokenizer(["a few words for a tiny tokenizer"] * 4, 300, with_tags=False)
    config = Qwen2Config(vocab_size=len(plain), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    plain.save_pretrained(tmp_path / "qwen")
    with pytest.raises(ValueError, match="no single token for '<Think>'.*multiverse convert"):
        export_model(tmp_path / "qwen", tmp_path / "out", verify=False)
