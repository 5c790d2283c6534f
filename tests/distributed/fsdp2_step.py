"""Run under torchrun by tests/test_distributed_configs.py: the Multiverse model trained under torch's FSDP2 on
CPU ranks, sharded as the shipped accelerate FSDP config says (one unit per decoder layer, then the root).

accelerate applies its FSDP config on GPUs only, so this takes the config's wrap class and resharding and calls
torch's ``fully_shard`` itself. Rank r trains on example r of a global batch; every rank also trains an unsharded
copy on the whole batch as the reference. argv: MODEL_FOLDER FSDP_YAML OUT_PREFIX; writes OUT_PREFIX{rank}.json.
"""

import copy
import json
import sys

import torch
import torch.distributed as dist
from accelerate.commands.config.config_args import ClusterConfig
from torch.distributed.fsdp import fully_shard
from transformers import AutoTokenizer

from multiverse.modeling_multiverse import MultiverseForCausalLM

TEXTS = ["Plan.\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n"
         "<Path>\n1: a is 3\n</Path>\n<Path>\n2: b is 4\n</Path>\n<Conclusion>\n7\n</Conclusion>\n</Parallel>\n"
         "Done: 7.",
         "No structure, a short line of text that is long enough.\nAnswer: 12"]
STEPS = 3


def train(model, batches, reduce):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(STEPS):
        # The backbone reads the structure from the ids and builds the Multiverse mask itself.
        loss = sum(model(input_ids=ids, labels=ids).loss for ids in batches) / len(batches)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(reduce(loss.detach()))
    return losses


def main(folder, config_path, prefix):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tok = AutoTokenizer.from_pretrained(folder)
    batches = [torch.tensor([tok.encode(t)]) for t in TEXTS[:world]]
    model = MultiverseForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    reference = train(copy.deepcopy(model), batches, lambda x: x.item())

    fsdp = ClusterConfig.from_yaml_file(config_path).fsdp_config
    wrap = fsdp["fsdp_transformer_layer_cls_to_wrap"]
    units = [m for m in model.modules() if type(m).__name__ == wrap]
    for unit in units:
        fully_shard(unit, reshard_after_forward=fsdp["fsdp_reshard_after_forward"])
    fully_shard(model)
    full = sum(p.numel() for p in model.parameters())
    local = sum(p.to_local().numel() for p in model.parameters())
    # FSDP's ranks hold other data: generate must not make them agree on rank 0's tokens as TP ranks do.
    from multiverse.modeling_multiverse.placement import tensor_parallel_group

    tp_group = tensor_parallel_group(model)

    def mean_over_ranks(loss):
        dist.all_reduce(loss)
        return loss.item() / world

    sharded = train(model, batches[rank:rank + 1], mean_over_ranks)
    with open(f"{prefix}{rank}.json", "w") as f:
        json.dump({"version": fsdp["fsdp_version"], "units": len(units), "full_params": full, "local_params": local, "tp_group": repr(tp_group),
                   "sharded": sharded, "reference": reference}, f)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    finally:
        if dist.is_initialized():
            # Every rank past its last collective before teardown: FSDP2's gloo threads still running on one rank
            # while the other destroys the group aborted a rank (exit -6) in about 1 run of 3.
            dist.barrier()
            dist.destroy_process_group()
