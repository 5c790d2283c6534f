"""The training loss three ways: time and peak memory of one forward + backward through the LM head.

  trl      TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``): what ``SFTTrainer`` and the recipes'
           default ``loss_impl: trl`` run; tokens and vocabulary in tiles, Triton kernels on CUDA
  chunked  ours (``multiverse.trl_recipes.loss.add_chunked_lm_head``, ``loss_impl: chunked``): the head on
           ``--chunk-tokens`` labelled tokens at a time under activation checkpointing
  full     the model's own loss over the full [L, vocab] logits (reference; ``--variants`` to add it)

The model is one Qwen2 decoder layer with a real vocabulary (``--vocab``, Qwen2.5's 151,936 by default) and
``--hidden`` width, so the LM head dominates; ``--label-fraction`` of the tokens carry labels (the completion).
Each (variant, L) runs in its own process, so peak memory is that step's alone: CUDA's allocator peak on a
GPU, the growth of the resident set's high-water mark on the CPU. The three losses must agree.

  CPU:  python benchmarks/loss.py --lengths 1024 4096
  GPU:  python benchmarks/loss.py --device cuda --hidden 1536 --lengths 8192 32768 --dtype bfloat16

The last line of output is JSON.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

VARIANTS = ("trl", "chunked", "full")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(args, variant):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=1, num_attention_heads=max(1, args.hidden // 64), num_key_value_heads=1,
                         max_position_embeddings=max(args.lengths), tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).to(args.device, getattr(torch, args.dtype)).train()
    if variant == "trl":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model)
    elif variant == "chunked":
        from multiverse.trl_recipes.loss import add_chunked_lm_head

        add_chunked_lm_head(model, args.chunk_tokens)
    return model


def one_step(args, variant: str, length: int) -> dict:
    model = build(args, variant)
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, args.vocab, (1, length), generator=gen).to(args.device)
    labels = ids.clone()
    labels[:, :int(length * (1 - args.label_fraction))] = -100  # the prompt carries no labels
    kwargs = {"trl": dict(labels=labels, fused_lm_head=True), "chunked": dict(chunked_ce_labels=labels),
              "full": dict(labels=labels)}[variant]
    cuda = args.device.startswith("cuda")
    # The CPU's high-water mark covers the process's life: the base is taken before the warmup, which is the
    # same step as the timed one. CUDA's peak is reset after it.
    base = None if cuda else rss_mb()
    for _ in range(args.warmup):  # first calls allocate and pick kernels; untimed
        model(ids, use_cache=False, **kwargs).loss.backward()
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    loss = model(ids, use_cache=False, **kwargs).loss
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return dict(variant=variant, length=length, loss=round(loss.item(), 5), seconds=round(seconds, 3),
                peak_mb=round(peak, 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--variants", default="trl,chunked")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk-tokens", type=int, default=2048)
    parser.add_argument("--label-fraction", type=float, default=0.9)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants {unknown}: choose from {VARIANTS}")
    if not 0 < args.label_fraction <= 1:
        parser.error(f"--label-fraction {args.label_fraction}: must be in (0, 1]")
    if args.one:
        print(json.dumps(one_step(args, args.one[0], int(args.one[1]))))
        return None
    rows = []
    base = list(argv if argv is not None else sys.argv[1:])
    for length in args.lengths:
        for variant in variants:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *base, "--one", variant, str(length)],
                                  capture_output=True, text=True)
            row = (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                   dict(variant=variant, length=length, status=f"failed: {proc.stderr.strip()[-300:]}"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = dict(device=args.device, dtype=args.dtype, vocab=args.vocab, hidden=args.hidden,
                  chunk_tokens=args.chunk_tokens, label_fraction=args.label_fraction, results=rows)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
