"""Run under torchrun (or alone) by tests/test_distributed_train.py: the Multiverse recipe, as its CLI runs it.

argv: OUT_JSON_PREFIX then the recipe's own arguments. Each process writes OUT_JSON_PREFIX{RANK}.json with the
logged losses and what transformers and accelerate saw (parallel mode, world size, distributed type).
"""

import json
import sys

import torch

from multiverse.distributed import process_rank
from multiverse.trl_recipes import sft_multiverse


def main(prefix, *recipe_args):
    torch.set_num_threads(1)
    trainer = sft_multiverse.main(*sft_multiverse.make_parser().parse_args_and_config(list(recipe_args)))
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    with open(f"{prefix}{process_rank()}.json", "w") as f:
        json.dump({"losses": losses, "parallel_mode": trainer.args.parallel_mode.value,
                   "world_size": trainer.args.world_size, "num_processes": trainer.accelerator.num_processes,
                   "distributed_type": str(trainer.accelerator.distributed_type),
                   "global_step": trainer.state.global_step}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
