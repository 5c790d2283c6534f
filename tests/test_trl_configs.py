"""Every shipped config parses into the recipes' dataclasses, with the reference hyperparameters."""

import dataclasses
import glob
import importlib.util
import io
import json
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from trl import ModelConfig, SFTConfig
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.model_shapes import random_model
from multiverse.trl_recipes import sft_autoregressive, sft_multiverse
from multiverse.trl_recipes.cli import KEY_OPTIONS
from multiverse.trl_recipes.recipe_parser import config_path
from multiverse.trl_recipes.trainer import MultiverseScriptArguments

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIGS = os.path.join(ROOT, "multiverse", "trl_recipes", "configs")
RECIPE_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "*.yaml")))
SIZES = {"0.5b": 16384, "1.5b": 32768, "7b": 32768, "32b": 32768}  # block size: 32768 for the large models


def test_there_is_a_config_per_size():
    names = [os.path.basename(p) for p in RECIPE_CONFIGS]
    assert all(f"qwen2.5-{size}-instruct.yaml" in names for size in SIZES)


def parse_as_on(module, cuda: bool, *args):
    parser = module.make_parser()
    parser.cuda = cuda
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated key in a shipped config is a bug
        return parser.parse_args_and_config(list(args))


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("module", [sft_multiverse, sft_autoregressive], ids=["multiverse", "autoregressive"])
def test_recipe_config_parses_with_the_reference_hyperparameters(path, module):
    # As on a CUDA machine (--use_cpu only because this one has no bf16-capable GPU); unknown keys would raise.
    script, training, model = parse_as_on(module, True, "--config", path, "--use_cpu")
    assert isinstance(script, MultiverseScriptArguments) and isinstance(training, SFTConfig)
    assert isinstance(model, ModelConfig)
    size = os.path.basename(path)[len("qwen2.5-"):].split("-")[0]
    assert model.model_name_or_path == f"Qwen/Qwen2.5-{size.upper()}-Instruct"
    assert training.max_length == SIZES[size]
    assert training.learning_rate == 1e-5 and training.lr_scheduler_type == "cosine"
    assert training.warmup_steps == 0.05 and training.weight_decay == 1e-4
    assert (training.adam_beta1, training.adam_beta2) == (0.9, 0.95)
    assert training.bf16 and training.activation_checkpointing
    assert training.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * {
        "0.5b": 1, "1.5b": 1, "7b": 8, "32b": 16}[size] == 16
    assert model.dtype == "bfloat16" and model.attn_implementation == "flex_attention"
    assert script.loss_impl == "trl" and not training.packing and training.pad_to_multiple_of == 128
    if "curriculum" in path:
        assert script.curriculum and training.num_train_epochs == 1
    else:
        assert script.curriculum is None and training.num_train_epochs == 5


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=os.path.basename)
def test_every_config_key_is_a_field_of_the_installed_trl(path):
    fields = {f.name for cls in (MultiverseScriptArguments, SFTConfig, ModelConfig) for f in dataclasses.fields(cls)}
    with open(path) as f:
        keys = set(yaml.safe_load(f))
    assert keys <= fields, sorted(keys - fields)


@pytest.mark.parametrize("module", [sft_multiverse, sft_autoregressive], ids=["multiverse", "autoregressive"])
def test_without_cuda_a_shipped_config_falls_back_in_one_line(module, capsys):
    script, training, model = parse_as_on(module, False, "--config", "qwen2.5-7b-instruct")
    assert (training.bf16, model.dtype, model.attn_implementation) == (False, "float32", "sdpa")
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and all(k in said[0] for k in ("bf16: True -> False", "dtype: bfloat16 -> float32",
                                                         "attn_implementation: flex_attention -> sdpa"))
    # The command line is the user's explicit choice: it stays, and the recipe or transformers judges it.
    _, _, model = parse_as_on(module, False, "--config", "qwen2.5-7b-instruct", "--attn_implementation",
                              "flex_attention")
    assert model.attn_implementation == "flex_attention"


def test_packaged_configs_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("qwen2.5-7b-instruct", "qwen2.5-7b-instruct.yaml"):
        assert config_path(name) == Path(CONFIGS).resolve() / "qwen2.5-7b-instruct.yaml"
    _, training, _ = parse_as_on(sft_multiverse, True, "--config=qwen2.5-0.5b-instruct", "--use_cpu")
    assert training.max_length == 16384
    with pytest.raises(FileNotFoundError, match="qwen2.5-7b: no such file.*packaged: qwen2.5-0.5b-instruct"):
        config_path("qwen2.5-7b")


def test_train_help_shows_the_recipe_options():
    runner = CliRunner()
    short = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert short.exit_code == 0 and "--help-all" in short.output
    parser = sft_multiverse.make_parser()
    flags = {s for action in parser._actions for s in action.option_strings}
    assert all(f"--{k}" in short.output and f"--{k}" in flags for k in KEY_OPTIONS)
    full = runner.invoke(app, ["train", "--help-all"])
    assert full.exit_code == 0 and full.output.count("\n  --") > 150  # every TRL/transformers option
    some = runner.invoke(app, ["train", "--help-all", "learning", "rate"])
    assert "--learning_rate" in some.output and "--lr_scheduler_type" in some.output
    assert "--per_device_train_batch_size" not in some.output and some.output.count("\n  --") < 10


def test_a_bad_recipe_option_is_one_line_not_the_usage_of_every_option():
    result = CliRunner().invoke(app, ["train", "--config", "qwen2.5-0.5b-instruct", "--learning_rate", "abc"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "--learning_rate/--learning-rate: invalid float value: 'abc'" in errors[0]
    assert "--bnb_4bit_quant_storage" not in result.output and len(result.output.splitlines()) <= 2


@pytest.mark.parametrize("name, kind", [("fsdp.yaml", "FSDP"), ("deepspeed_zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_load(name, kind):
    config = ClusterConfig.from_yaml_file(os.path.join(CONFIGS, "accelerate", name))
    assert config.distributed_type == kind and config.mixed_precision == "bf16"
    if kind == "FSDP":
        # The wrap class must be the decoder layer the Multiverse model is made of.
        layer = type(random_model("tiny").model.layers[0]).__name__
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == layer
    else:
        assert config.deepspeed_config["zero_stage"] == 3


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_step", os.path.join(ROOT, "benchmarks", "train_step.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def last_json(argv):
    out = io.StringIO()
    with redirect_stdout(out):
        load_benchmark().main(argv)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_benchmark_gpu_code_path_runs_on_cpu():
    report = last_json(["--device", "cpu", "--size", "tiny", "--lengths", "768", "--steps", "1", "--warmup", "0",
                        "--variants", "a,b,c,a-chunked", "--chunk-tokens", "256", "--source", "corpus"])
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"a", "b", "c", "a-chunked"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["c"]["visible_fraction"] < 0.95  # the first 768 corpus tokens already hold a block
    # Same weights, same tokens: the causal variants agree, and the reference dense mask agrees with our path.
    assert rows["a"]["loss"] == pytest.approx(rows["a-chunked"]["loss"], abs=1e-4)
    assert rows["b"]["loss"] == pytest.approx(rows["c"]["loss"], abs=1e-4)
    assert rows["a"]["loss"] != rows["b"]["loss"]  # and the structure does change the computation
    assert "768" in report["c_over_a_time"]


def test_benchmark_collator_only_reports_throughput_and_memory():
    report = last_json(["--collator-only", "--lengths", "2048", "4096", "--repeats", "2"])
    assert report["tokens_per_s"] > 0 and report["peak_mb"] > 0 and report["length"] == 4096
    assert [r["length"] for r in report["results"]] == [2048, 4096]
