"""Forward+backward through a Qwen2.5-1.5B-shaped model on one structured sequence: causal vs dense mask vs flex.

    python benchmarks/attention.py --device cuda                      # L = 4096 and 16384, bf16 (the issue's run)
    python benchmarks/attention.py --device cpu --size tiny --lengths 512 --dtype float32   # smoke test

Three cases, all through the model with random weights and gradient checkpointing:
- causal: no structure (what plain SFT costs);
- dense: the reference way, a [1, 1, L, L] additive float mask built from the layout, sdpa;
- flex: our path, precomputed structure tensors -> create_causal_mask -> FlexAttention BlockMask.
The loss is the mean square of the backbone's last hidden state, so the LM head does not swamp attention.
"""

import argparse

import torch
from transformers import Qwen2Model

from common import device_name, finish, structured_ids, timed
from multiverse.model_shapes import random_model
from multiverse.modeling_multiverse import compute_layout
from multiverse.modeling_multiverse.configuration_multiverse import QWEN25_TAG_IDS


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="qwen2.5-1.5b")
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--paths", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    return p


def sequence(length: int, paths: int, vocab: int):
    """Prefix 10%, four paths sharing 80%, conclusion the rest: the shape of a Multiverse training example."""
    text_ids = torch.arange(1000, min(vocab, 150000))
    path_len = int(length * 0.8) // paths
    ids = structured_ids(QWEN25_TAG_IDS, text_ids, paths, path_len, prefix_len=length // 10)
    ids += text_ids[:length - len(ids)].tolist()
    return torch.tensor(ids[:length])


def run_case(model, case: str, ids, layout, device: str, repeat: int):
    model.config._attn_implementation = {"causal": "sdpa", "dense": "sdpa", "flex": "flex_attention"}[case]
    inputs = {"input_ids": ids[None].to(device)}
    if case == "dense":
        seg, vis = layout.segment_ids.long(), layout.visibility
        n = len(seg)
        allowed = vis[seg[:, None], seg[None, :]] & torch.ones(n, n, dtype=torch.bool).tril()
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(n, n, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        inputs.update(attention_mask=mask[None, None].to(device), position_ids=layout.position_ids[None].to(device))
    elif case == "flex":
        inputs.update(mv_segment_ids=layout.segment_ids[None].to(device), mv_visibility=layout.visibility[None].to(device),
                      position_ids=layout.position_ids[None].to(device))

    # FlexAttention has no backward on CPU: there the flex case times the forward only.
    backward = not (case == "flex" and device == "cpu")

    # causal must be plain Qwen2: MultiverseModel would read the structure from the ids.
    forward = (lambda **kw: Qwen2Model.forward(model.model, **kw)) if case == "causal" else model.model

    def step():
        with torch.set_grad_enabled(backward):
            out = forward(**inputs)
            loss = out.last_hidden_state.float().pow(2).mean()
        if backward:
            loss.backward()
            model.zero_grad(set_to_none=True)
        return loss

    step()  # warm-up (flex compiles here)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, _ = timed(step, device, repeat)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return seconds, peak


def main(args):
    dtype = getattr(torch, args.dtype)
    model = random_model(args.size, dtype=dtype, device=args.device).train()
    model.activation_checkpointing_enable({"use_reentrant": False})  # gradient_checkpointing_enable: deprecated alias
    results = {}
    for length in args.lengths:
        ids = sequence(length, args.paths, model.config.vocab_size)
        layout = compute_layout(ids, model.config.multiverse_tag_ids)
        row = {}
        for case in ("causal", "dense", "flex"):
            seconds, peak = run_case(model, case, ids, layout, args.device, args.repeat)
            row[case] = {"seconds": round(seconds, 4), "peak_gib": None if peak is None else round(peak, 2)}
            print(f"L={length:6d} {case:7s} {seconds * 1000:9.1f} ms  peak {row[case]['peak_gib']} GiB", flush=True)
        row["flex_over_causal_time"] = round(row["flex"]["seconds"] / row["causal"]["seconds"], 3)
        row["flex_over_dense_time"] = round(row["flex"]["seconds"] / row["dense"]["seconds"], 3)
        row["flex_over_causal_memory"] = round(row["flex"]["peak_gib"] / row["causal"]["peak_gib"], 3) \
            if args.device == "cuda" else None
        print(f"L={length:6d} flex/causal time {row['flex_over_causal_time']}  flex/dense time "
              f"{row['flex_over_dense_time']}  flex/causal memory {row['flex_over_causal_memory']}", flush=True)
        results[str(length)] = row
    finish({"benchmark": "attention", "size": args.size, "dtype": args.dtype, "device": device_name(args.device),
            "paths": args.paths, "results": results})


if __name__ == "__main__":
    main(make_parser().parse_args())
