"""The Multiverse recipe as one 2-process DDP job on the CPU (torchrun, gloo, accelerate's MULTI_CPU), against
the same recipe in one process with the same global batch; and the guard against lone processes."""

import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from distributed_helpers import rank_outputs, torchrun
from multiverse.model_shapes import random_model
from multiverse.trl_recipes import sft_multiverse
from samples import COMPLETION, NESTED, TEXT

STEPS = 2
# Float32 on the CPU: DDP adds the two ranks' gradients in another order than one batch of two does, and pads
# each rank's example alone. Measured relative differences of the 2 logged losses: 7e-8 and 1.4e-7.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("ddp")
    random_model("tiny", tokenizer).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    texts = [COMPLETION, TEXT, NESTED, "No structure here: 2 + 2 = 4.\nAnswer: 4"]
    rows = [{"prompt": [{"role": "user", "content": f"Problem {i}?"}],
             "completion": [{"role": "assistant", "content": text}]} for i, text in enumerate(texts)]
    Dataset.from_list(rows).to_json(root / "data.jsonl")
    (root / "tiny.yaml").write_text(
        f"model_name_or_path: {root / 'model'}\nattn_implementation: sdpa\ndataset_name: {root / 'data.jsonl'}\n"
        f"max_steps: {STEPS}\nmax_length: 512\nuse_cpu: true\nbf16: false\nlearning_rate: 1.0e-3\nreport_to: none\n"
        f"save_strategy: steps\nsave_steps: {STEPS}\nsave_only_model: true\nlogging_steps: 1\nseed: 0\n"
        "activation_checkpointing: false\n")  # TRL's default turns it on; it is slower and not what is tested
    return root


def recipe_args(workdir, output_dir, per_device):
    return ["--config", str(workdir / "tiny.yaml"), "--output_dir", str(output_dir),
            "--per_device_train_batch_size", str(per_device)]


def test_two_process_ddp_equals_one_process(workdir, tmp_path):
    torchrun("ddp_train.py", tmp_path / "rank", *recipe_args(workdir, tmp_path / "ddp", 1), timeout=240)
    ddp = rank_outputs(tmp_path)
    trainer = sft_multiverse.main(*sft_multiverse.make_parser().parse_args_and_config(
        recipe_args(workdir, tmp_path / "one", 2)))  # one process, the same global batch of 2
    single = {"losses": [row["loss"] for row in trainer.state.log_history if "loss" in row]}
    assert trainer.args.world_size == 1 and len(single["losses"]) == STEPS
    for rank in ddp:
        assert (rank["parallel_mode"], rank["world_size"], rank["num_processes"]) == ("distributed", 2, 2)
        assert rank["distributed_type"] == "DistributedType.MULTI_CPU"
        assert rank["global_step"] == STEPS
        assert len(rank["losses"]) == STEPS and all(math.isfinite(x) for x in rank["losses"])
        for got, want in zip(rank["losses"], single["losses"]):
            assert got == pytest.approx(want, rel=LOSS_RTOL)
    # Rank 0 alone wrote: one checkpoint and one final model, the weights one process trains.
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith("checkpoint")) == [
        f"checkpoint-{STEPS}"]
    got, want = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    before = load_file(workdir / "model" / "model.safetensors")
    assert not torch.equal(got["lm_head.weight"], before["lm_head.weight"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def test_lone_processes_of_a_multi_process_launch_stop(tmp_path, monkeypatch):
    """WORLD_SIZE says 2, but this process is not in a 2-process job: it would train alone, as its twin would,
    and both would write one output_dir. transformers' view of the run is faked; the launcher's is the env."""
    from types import SimpleNamespace

    from transformers.training_args import ParallelMode

    from multiverse.distributed import check_training_launch

    lone = SimpleNamespace(parallel_mode=ParallelMode.NOT_PARALLEL, world_size=1, output_dir=str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"launched for 2 processes .* parallel_mode=not_parallel, world_size=1"):
        check_training_launch(lone)
    short = SimpleNamespace(parallel_mode=ParallelMode.DISTRIBUTED, world_size=4, output_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="world_size=4"):
        check_training_launch(short)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_training_launch(lone)  # one process launched, one process running: fine
