"""Running the CLIs and recipes on several processes, on the engines torch, transformers and accelerate provide.

Nothing here distributes work itself: ``torchrun`` starts the processes, transformers shards a model for
generation (``tp_plan="auto"``, torch DTensor) and accelerate runs training (DDP, FSDP2, DeepSpeed). What is
ours is the glue a multi-process run needs:
- ``launched_world_size()`` / ``is_main_process()``: how many processes the launcher asked for, and whether
  this one prints and writes files (rank 0);
- ``generation_load_kwargs()``: under ``torchrun`` a model is loaded tensor-parallel over the launched ranks;
- ``check_training_launch()``: a run launched for N processes must be one N-process job; otherwise every process
  would train the whole model alone and all of them would write the same output_dir;
- ``engine_mismatch()``: names an FSDP/DeepSpeed config that accelerate did not apply (it does so on GPUs only);
- ``rank_private_dir()``: where a rank other than 0 keeps what it must not write into the user's folder;
- ``destroy_process_group_at_exit()``: gloo's teardown aborts a rank (exit -6) unless the group is destroyed.
"""

import atexit
import os
import warnings


def launched_world_size() -> int:
    """Processes the launcher (torchrun, accelerate launch, deepspeed) started: its WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the one process that prints results and writes files (rank 0, or a run without a launcher)."""
    return process_rank() == 0


def _destroy():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_registered = False


def destroy_process_group_at_exit():
    """Destroy the default process group when the interpreter exits (idempotent)."""
    global _registered
    if not _registered:
        atexit.register(_destroy)
        _registered = True


def generation_load_kwargs(device: str) -> dict:
    """``from_pretrained`` keyword arguments for a CLI that generates: tensor-parallel over the launched ranks
    under torchrun (transformers' DistributedConfig, which also starts the process group), else nothing.
    Tensor parallelism places each rank's shard itself (CUDA device LOCAL_RANK when there is one, else the CPU),
    so the caller must leave the model where it is: ``device`` is then ignored."""
    world = launched_world_size()
    if world <= 1:
        return {}
    from transformers import DistributedConfig

    destroy_process_group_at_exit()
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


def check_training_launch(training_args):
    """Stop a run that was launched for several processes but did not come up as one distributed job.

    Raises RuntimeError naming what the launcher asked for and what transformers saw: for example, FSDP's
    accelerate config on a machine without GPUs starts two processes that each train alone
    (``parallel_mode != DISTRIBUTED``) and both write the same output_dir."""
    from transformers.training_args import ParallelMode

    world = launched_world_size()
    if world <= 1:
        return
    mode = training_args.parallel_mode
    if mode != ParallelMode.DISTRIBUTED or training_args.world_size != world:
        raise RuntimeError(
            f"this run was launched for {world} processes (WORLD_SIZE={world}) but came up as "
            f"parallel_mode={mode.value}, world_size={training_args.world_size}: each process would train alone and "
            f"all of them would write {training_args.output_dir!r}. On the CPU launch with `torchrun "
            f"--nproc-per-node {world} -m multiverse.trl_recipes.sft_multiverse ... --use_cpu` (gloo DDP); on GPUs "
            "use `accelerate launch --config_file .../fsdp.yaml` with one process per GPU.")
    destroy_process_group_at_exit()
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:  # the trainer's Accelerator exists: what accelerate really runs
        message = engine_mismatch(AcceleratorState().distributed_type.value)
        if message:
            warnings.warn(message, stacklevel=2)


def engine_mismatch(actual: str) -> str | None:
    """What to tell a user whose accelerate config asked for FSDP or DeepSpeed when accelerate runs another
    engine: accelerate 1.x applies them only on accelerators, so on CPUs the FSDP config runs as DDP (MULTI_CPU),
    which is correct but keeps a whole model and optimizer state in every process."""
    for env, engine in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if os.environ.get(env, "false").lower() == "true" and actual != engine:
            return (f"the accelerate config asks for {engine} but accelerate runs this job as {actual}: every "
                    "process holds the whole model and its optimizer state (accelerate applies "
                    f"{engine} on GPUs only)")
    return None


def rank_private_dir(out, keep: tuple[str, ...] = ()):
    """``out`` on the main process; on the others a private temporary folder holding a copy of the ``keep`` files
    of ``out`` as they are now, removed at exit. Every rank of a tensor-parallel run must do the same work (the
    ranks meet in every layer), so each resumes from the same records, but only rank 0 writes into ``out``.
    Call it before the model is loaded: loading joins the ranks, and rank 0 appends nothing before that."""
    import shutil
    import tempfile
    from pathlib import Path

    if is_main_process():
        return out
    private = Path(tempfile.mkdtemp(prefix=f"multiverse-rank{process_rank()}-"))
    atexit.register(shutil.rmtree, private, True)
    for name in keep:
        if (Path(out) / name).is_file():
            shutil.copy(Path(out) / name, private / name)
    return private
