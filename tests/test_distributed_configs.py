"""The accelerate configs for FSDP2 and DeepSpeed ZeRO-3, read by accelerate's own launcher and plugins.

Neither engine runs on a CPU-only machine: accelerate 1.x applies FSDP and DeepSpeed on accelerators only (on
the CPU the FSDP config comes up as MULTI_CPU DDP, which tests/test_distributed_train.py runs), and DeepSpeed is
not installed in CI. So these tests take each config the way ``accelerate launch`` does (its parser, its
validation, the environment it hands the processes) and build the plugin every process would build from it.
"""

import os

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from multiverse.distributed import engine_mismatch
from multiverse.model_shapes import random_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "multiverse", "trl_recipes", "configs", "accelerate")


def launch_args(name):
    args = launch_command_parser().parse_args(["--config_file", os.path.join(CONFIGS, name), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def test_fsdp_config_gives_fsdp2_over_decoder_layers(monkeypatch):
    args, _ = launch_args("fsdp.yaml")
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # one consolidated checkpoint, as the recipes save
    # The wrap class is what the Multiverse model is made of: FSDP2 shards each decoder layer as one unit.
    model = random_model("tiny")
    layer = type(model.model.layers[0]).__name__
    assert plugin.transformer_cls_names_to_wrap == [layer]
    assert sum(type(m).__name__ == layer for m in model.modules()) == model.config.num_hidden_layers


def test_deepspeed_config_gives_zero3(monkeypatch):
    args, defaults = launch_args("deepspeed_zero3.yaml")
    assert args.use_deepspeed and args.zero_stage == 3
    # As `accelerate launch` records which DeepSpeed fields came from the config file.
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "none" and plugin.zero3_init_flag is True


def test_a_config_engine_that_accelerate_did_not_apply_is_named(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert "asks for FSDP but accelerate runs this job as MULTI_CPU" in engine_mismatch("MULTI_CPU")
    assert engine_mismatch("FSDP") is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert "DEEPSPEED" in engine_mismatch("MULTI_GPU")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    assert engine_mismatch("MULTI_CPU") is None


def test_fsdp_config_trains_the_model_under_torch_fsdp2_on_cpu(tmp_path, tokenizer):
    """What accelerate would do with the config on GPUs, done with torch's fully_shard on 2 CPU ranks: each rank
    holds half of every parameter, and the losses are those of one process over the same global batch."""
    from distributed_helpers import rank_outputs, torchrun

    folder = tmp_path / "model"
    random_model("tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torchrun("fsdp2_step.py", folder, os.path.join(CONFIGS, "fsdp.yaml"), tmp_path / "rank")
    for rank in rank_outputs(tmp_path):
        assert rank["version"] == 2 and rank["units"] == 2 and rank["tp_group"] == "None"
        assert rank["local_params"] <= rank["full_params"] // 2 + 64  # sharded, not replicated
        assert rank["reference"][-1] < rank["reference"][0]  # the reference really trains
        assert rank["sharded"] == pytest.approx(rank["reference"], rel=1e-5)
