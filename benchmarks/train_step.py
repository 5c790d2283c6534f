"""One training step on one structured sequence: time and peak memory, three ways.

  a  causal attention, no structure (Qwen2, sdpa, the usual full-logits loss)
  b  the reference way: a dense [1, 1, L, L] additive mask from the layout (Qwen2, sdpa, full-logits loss)
  c  our recipe: MultiverseModel + collator tensors, FlexAttention BlockMask on CUDA, chunked cross-entropy
  a-chunked (not run by default): a with the chunked loss, to separate the attention from the loss

All use a random-weight model of ``--size``, bf16 on CUDA, gradient checkpointing and AdamW. The sequence
is real Multiverse-32B output from ``$MULTIVERSE_CORPUS`` (its structured, well-formed transcripts in a row,
cut to L), or a synthetic one of the same shape when the corpus is missing. Each (variant, L) runs in its
own process on CUDA, so one variant's allocator state or OOM cannot affect the next. This file imports
neither TRL nor datasets: the GPU machine has neither.

  GPU:           python benchmarks/train_step.py --lengths 16384 32768
  CPU smoke:     python benchmarks/train_step.py --device cpu --size tiny --lengths 512
  collator only: python benchmarks/train_step.py --collator-only --lengths 8192 16384 32768

The last line of output is JSON.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from multiverse.model_shapes import shape_config  # noqa: E402
from multiverse.modeling_multiverse import parse, tag_token_ids  # noqa: E402
from multiverse.modeling_multiverse.configuration_multiverse import QWEN25_TAG_IDS  # noqa: E402
from multiverse.modeling_multiverse.masks import visibility_from_order  # noqa: E402
from multiverse.trl_recipes.collator import MultiverseDataCollator  # noqa: E402
from multiverse.trl_recipes.loss import add_chunked_lm_head  # noqa: E402

VARIANTS = {"a": "causal, no structure", "b": "dense 4D mask (reference)",
            "c": "recipe: BlockMask + chunked CE", "a-chunked": "causal + chunked CE"}


@functools.lru_cache(maxsize=1)
def corpus_pieces():
    """The corpus's complete structured transcripts as token ids, with (tag ids, vocabulary size); or None."""
    from multiverse.testing import corpus_files, corpus_tokenizer
    from multiverse.transcripts import read_transcript

    files = corpus_files()
    if not files:
        return None
    tok = corpus_tokenizer()
    tags = tag_token_ids(tok)
    pieces = []
    for path in files:
        t = read_transcript(path)
        ids = tok(t.prompt + t.completion)["input_ids"]
        result = parse(ids, tags)
        if result.ok and result.max_depth >= 1:  # complete structures only, so the next one starts at the root
            pieces.append(ids)
    return (pieces, tags, len(tok)) if pieces else None


def synthetic_sequence(length: int, seed: int = 0):
    """Blocks of 2-4 paths of 100-800 tokens, some nested, between runs of text: the corpus's shape."""
    rng = np.random.default_rng(seed)
    tags = dict(zip(["<Parallel>", "</Parallel>", "<Goal>", "</Goal>", "<Outline>", "</Outline>", "<Path>",
                     "</Path>", "<Conclusion>", "</Conclusion>"], QWEN25_TAG_IDS[2:]))
    nl, colon, digit0 = 198, 25, 15  # Qwen2.5's "\n", ":" and "0"

    def text(lo, hi):
        return rng.integers(1000, 100000, int(rng.integers(lo, hi))).tolist()

    def block(depth):
        n = int(rng.integers(2, 5))
        out = [tags["<Parallel>"], nl, tags["<Goal>"]]
        for k in range(n):
            out += [nl, tags["<Outline>"], nl, digit0 + k + 1, colon] + text(10, 40) + [nl, tags["</Outline>"]]
        out += [nl, tags["</Goal>"]]
        for k in range(n):
            body = text(100, 800)
            if depth < 2 and rng.random() < 0.2:
                body += block(depth + 1) + text(20, 100)
            out += [nl, tags["<Path>"], nl, digit0 + k + 1, colon] + body + [nl, tags["</Path>"]]
        return out + [nl, tags["<Conclusion>"]] + text(50, 200) + [nl, tags["</Conclusion>"], nl, tags["</Parallel>"]]

    ids = text(200, 300)
    while len(ids) < length:
        ids += text(100, 600) + block(1)
    return ids[:length], list(QWEN25_TAG_IDS), None


def sequence(length: int, source: str = "auto"):
    """(ids, tag ids, vocabulary size or None, source): the corpus's transcripts in a row, cut to ``length``."""
    found = corpus_pieces() if source in ("auto", "corpus") else None
    if found:
        pieces, tags, vocab = found
        ids = []
        while len(ids) < length:
            for piece in pieces:
                ids.extend(piece)
        return ids[:length], tags, vocab, "corpus"
    if source == "corpus":
        raise SystemExit("no corpus: set MULTIVERSE_CORPUS to the multiverse32b-aime24 folder, or --source synthetic")
    return (*synthetic_sequence(length), "synthetic")


def sparsity(batch, block: int = 128) -> dict:
    """Share of the causal attention the structure keeps, per (q, k) pair and per FlexAttention block.

    Everything else is what a BlockMask lets the kernel skip; computed per segment, never as L x L.
    """
    seg = batch["mv_segment_ids"][0].numpy()
    vis = visibility_from_order(batch["mv_visibility"][0]).numpy()
    n, n_seg = len(seg), vis.shape[0]
    onehot = np.eye(n_seg, dtype=np.int64)[seg]  # [L, S]
    pairs = (np.cumsum(onehot, axis=0) * vis[seg]).sum() / (n * (n + 1) / 2)
    blocks = -(-n // block)
    present = np.zeros((blocks, n_seg), dtype=np.int64)
    np.add.at(present, np.arange(n) // block, onehot)
    seen = (present > 0).astype(np.int64) @ vis.astype(np.int64) @ (present > 0).astype(np.int64).T > 0
    causal = np.tril(np.ones((blocks, blocks), dtype=bool))
    return dict(visible_fraction=round(float(pairs), 4),
                block_visible_fraction=round(float((seen & causal).sum() / causal.sum()), 4))


def build_model(variant: str, args, tag_ids, vocab):
    from transformers import Qwen2ForCausalLM

    from multiverse.modeling_multiverse import MultiverseForCausalLM

    attn = args.attn if variant == "c" else "sdpa"
    config = shape_config(args.size, tag_ids, vocab if args.size == "tiny" else None, attn)
    config.use_cache = False
    with torch.device(args.device):
        model = (MultiverseForCausalLM if variant == "c" else Qwen2ForCausalLM)(config)
    # The two classes draw their initial weights differently; the same draw per parameter name makes every
    # variant the same model, so their losses must agree (a = a-chunked, b = c).
    torch.manual_seed(0)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.ndim >= 2:
                param.normal_(0.0, config.initializer_range)
    model.to(args.dtype).train()
    model.activation_checkpointing_enable({"use_reentrant": False})  # gradient_checkpointing_enable: deprecated alias
    if variant in ("c", "a-chunked"):
        add_chunked_lm_head(model, args.chunk_tokens)
    return model


def step_inputs(variant: str, batch, device, dtype):
    ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    if variant == "a":
        return dict(input_ids=ids, labels=labels)
    if variant == "a-chunked":
        return dict(input_ids=ids, chunked_ce_labels=labels)
    positions = batch["position_ids"].to(device)
    if variant == "b":
        seg = batch["mv_segment_ids"][0].to(device).long()
        allowed = visibility_from_order(batch["mv_visibility"][0].to(device))[seg[:, None], seg[None, :]]  # the L x L the recipe avoids
        steps = torch.arange(seg.shape[0], device=device)
        allowed &= steps[:, None] >= steps[None, :]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        del allowed
        return dict(input_ids=ids, attention_mask=mask[None, None], position_ids=positions, labels=labels)
    return dict(input_ids=ids, attention_mask=batch["attention_mask"].to(device), position_ids=positions,
                mv_segment_ids=batch["mv_segment_ids"].to(device), mv_visibility=batch["mv_visibility"].to(device),
                chunked_ce_labels=labels)


def run_one(variant: str, length: int, args) -> dict:
    ids, tag_ids, vocab, source = sequence(length, args.source)
    batch = MultiverseDataCollator(tag_ids, pad_token_id=0)([{"input_ids": ids}])
    row = dict(variant=variant, name=VARIANTS[variant], length=length, source=source, **sparsity(batch))
    cuda = args.device.startswith("cuda")
    try:
        model = build_model(variant, args, tag_ids, vocab)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4, fused=cuda)
        inputs = step_inputs(variant, batch, args.device, args.dtype)
        times, losses = [], []
        for i in range(args.warmup + args.steps):
            if i == args.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = model(**inputs).loss
            loss.backward()
            opt.step()
            losses.append(loss.item())  # the host sync that ends the step
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        row.update(status="ok", step_s=round(statistics.median(times), 4), loss=round(losses[-1], 4),
                   peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)
        if not all(np.isfinite(losses)):
            row["status"] = "non-finite loss"
    except torch.OutOfMemoryError:
        row.update(status="oom", step_s=None, peak_gib=None)
    return row


def run_isolated(variant: str, length: int, argv: list) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--one", variant, "--lengths", str(length)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return dict(variant=variant, name=VARIANTS[variant], length=length, status=f"error rc={proc.returncode}",
                step_s=None, peak_gib=None, stderr=proc.stderr[-2000:])


def collator_only(lengths: list, repeats: int, source: str) -> dict:
    """Structure and layout construction alone, on one core: tokens/s and peak memory per length."""
    cores, threads = (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None), torch.get_num_threads()
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        rows = [collate_timing(length, repeats, source) for length in lengths]
    finally:  # main() may run inside another program (the tests): give its cores back
        if cores:
            os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
    return dict(mode="collator-only", cores=1, tokens_per_s=rows[-1]["tokens_per_s"], peak_mb=rows[-1]["peak_mb"],
                length=rows[-1]["length"], results=rows,
                peak_mb_per_ktoken=[round(r["peak_mb"] / (r["length"] / 1024), 4) for r in rows])


def collate_timing(length: int, repeats: int, source: str) -> dict:
    ids, tag_ids, _, used = sequence(length, source)
    collate = MultiverseDataCollator(tag_ids, pad_token_id=0)
    examples = [{"input_ids": ids, "labels": ids}]  # lists, as a datasets row gives them
    for _ in range(3):
        collate(examples)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        collate(examples)
        times.append(time.perf_counter() - start)
    # The collator allocates through numpy (wrapped by torch.from_numpy), which tracemalloc sees.
    tracemalloc.start()
    out = collate(examples)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = statistics.median(times)
    row = dict(length=length, source=used, ms=round(seconds * 1e3, 3), tokens_per_s=round(length / seconds),
               peak_mb=round(peak / 2**20, 3), segments=int(out["mv_visibility"].shape[-1]))
    print(f"L={length:>6}  {row['ms']:8.2f} ms  {row['tokens_per_s'] / 1e6:6.2f} M tokens/s  "
          f"peak {row['peak_mb']:7.3f} MB  segments {row['segments']}  ({used})", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="qwen2.5-1.5b")
    parser.add_argument("--lengths", "--length", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--variants", default="a,b,c", help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (FlexAttention compiles)")
    parser.add_argument("--chunk-tokens", type=int, default=2048)
    parser.add_argument("--attn", default=None, help="attention for c: flex_attention on CUDA, sdpa on the CPU")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="one process per (variant, L); default on for CUDA")
    parser.add_argument("--source", choices=["auto", "corpus", "synthetic"], default="auto",
                        help="auto: the corpus when $MULTIVERSE_CORPUS (or ../shared/corpus) has it, else synthetic")
    parser.add_argument("--collator-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.collator_only:
        print(json.dumps(collator_only(args.lengths, args.repeats, args.source)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants {unknown}: choose from {list(VARIANTS)}")
    cuda = args.device.startswith("cuda")
    args.attn = args.attn or ("flex_attention" if cuda else "sdpa")
    args.dtype = torch.bfloat16 if cuda else torch.float32
    if args.one:
        print(json.dumps(run_one(args.one, args.lengths[0], args)))
        return
    isolate = cuda if args.isolate is None else args.isolate
    passthrough = list(argv if argv is not None else sys.argv[1:])
    rows = []
    for length in args.lengths:
        for variant in variants:
            row = run_isolated(variant, length, passthrough) if isolate else run_one(variant, length, args)
            rows.append(row)
            print(f"{variant:>9}  L={length:>6}  {row['status']:<8} step {row.get('step_s')} s  "
                  f"peak {row.get('peak_gib')} GiB  visible {row.get('visible_fraction')} "
                  f"(blocks {row.get('block_visible_fraction')})  {row['name']}", flush=True)
    times = {(r["variant"], r["length"]): r.get("step_s") for r in rows}
    ratio = {str(n): round(times[("c", n)] / times[("a", n)], 3) for n in args.lengths
             if times.get(("c", n)) and times.get(("a", n))}
    device = torch.cuda.get_device_name() if cuda else "cpu"
    import transformers

    print(json.dumps(dict(mode="train_step", device=device, size=args.size, torch=torch.__version__,
                          transformers=transformers.__version__, results=rows, c_over_a_time=ratio)))


if __name__ == "__main__":
    main()
