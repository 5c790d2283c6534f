"""Cached autoregressive decoding (``generate(..., multiverse_parallel=False)``) against HF's own generate.

    python benchmarks/ar_decoding.py --size tiny --new-tokens 128
    python benchmarks/ar_decoding.py --size tiny --new-tokens 128 --inside-path
    python benchmarks/ar_decoding.py --size qwen2.5-0.5b --new-tokens 24
    python benchmarks/ar_decoding.py --size qwen2.5-0.5b --device cuda --new-tokens 256

Both models hold the same random weights: ours (MultiverseForCausalLM: the structure mask, the cached layout
extended per token, the structure logits processor) and a plain Qwen2ForCausalLM, the stock path. Both get
the same ~1K-token prompt with a complete block in it and emit the same tokens (a forcing processor), so
they do the same work but for what Multiverse adds. Decode time per token is the median time between two
consecutive steps' logits (the prefill is reported apart). Target: ours at most 1.2x HF's per-token time. The last line is JSON.
"""

import argparse
import statistics
import time

import torch
from transformers import LogitsProcessorList

from common import device_name, finish, structured_ids, sync
from multiverse.model_shapes import random_model
from multiverse.modeling_multiverse.tags import TAGS
from multiverse.testing import corpus_tokenizer
from replay import ForceTokens, stock_model


class TimedForce(ForceTokens):
    """Forces the continuation and stamps the time of every step's logits."""

    def __init__(self, targets, prompt_length: int, stamps: list, device: str):
        super().__init__(targets, prompt_length)
        self.stamps, self.device = stamps, device

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return super().__call__(input_ids, scores)


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--prompt-tokens", type=int, default=1024, help="prompt length; a block of 4 paths sits inside")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per decoder (interleaved)")
    p.add_argument("--inside-path", action="store_true",
                   help="the prompt ends inside the block's last path: every step builds the structure mask")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def build_prompt(tokenizer, tags, length: int, generator, inside_path: bool = False) -> list[int]:
    """``length`` tokens: filler text, a complete block (4 paths of 48 tokens), filler text; or, with
    ``inside_path``, filler text then the block up to the middle of its last path."""
    pool = torch.arange(300, 1000)
    block = structured_ids(tags, pool, 4, 48, newline=tokenizer.encode("\n")[0],
                           label_ids=lambda k: tokenizer.encode(f"{k}:"), generator=generator)
    if inside_path:
        block = block[:len(block) - block[::-1].index(tags[TAGS.index("</Path>")]) - 1]
    if length < len(block) + 2:
        raise ValueError(f"--prompt-tokens {length} cannot hold the {len(block)}-token block")
    head = length - len(block) if inside_path else (length - len(block)) // 2

    def filler(n):
        return pool[torch.randint(len(pool), (n,), generator=generator)].tolist()

    return filler(head) + block + filler(length - len(block) - head)


def main(args):
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = corpus_tokenizer()
    model = random_model(args.size, tokenizer, dtype=dtype, device=device)
    stock = stock_model(model)
    g = torch.Generator().manual_seed(0)
    prompt = build_prompt(tokenizer, model.config.multiverse_tag_ids, args.prompt_tokens, g, args.inside_path)
    continuation = torch.randint(300, 1000, (args.new_tokens,), generator=g).tolist()  # top-level text
    ids = torch.tensor([prompt] * args.batch, device=device)
    targets = torch.tensor([continuation] * args.batch, device=device)

    def run(which, n, stamps, **extra):
        forcing = LogitsProcessorList([TimedForce(targets, len(prompt), stamps, device)])
        return which.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0, logits_processor=forcing, **extra)

    decoders = {"hf": (stock, {}), "ours": (model, dict(multiverse_parallel=False))}
    steps = {name: [] for name in decoders}
    prefill = {name: [] for name in decoders}
    for name, (which, extra) in decoders.items():
        run(which, 4, [], **extra)  # warm-up
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        for name, (which, extra) in decoders.items():
            stamps = []
            sync(device)
            begin = time.perf_counter()
            out = run(which, args.new_tokens, stamps, **extra)
            if out[:, len(prompt):].tolist() != [continuation] * args.batch:
                raise RuntimeError(f"{name} did not emit the forced continuation")
            prefill[name].append(stamps[0] - begin)
            steps[name] += [b - a for a, b in zip(stamps, stamps[1:])]
    # One decode step = the time between two consecutive logits (forward, processors, HF's loop); the median
    # of all steps is robust to a shared machine's hiccups.
    per_token = {name: statistics.median(times) for name, times in steps.items()}
    ratio = per_token["ours"] / per_token["hf"]
    result = {"benchmark": "ar_decoding", "size": args.size, "device": device_name(device), "dtype": str(dtype)[6:],
              "prompt_tokens": len(prompt), "inside_path": args.inside_path, "new_tokens": args.new_tokens, "batch": args.batch,
              "hf_ms_per_token": round(1000 * per_token["hf"], 3),
              "ours_ms_per_token": round(1000 * per_token["ours"], 3),
              "hf_prefill_s": round(min(prefill["hf"]), 3), "ours_prefill_s": round(min(prefill["ours"]), 3),
              "ratio": round(ratio, 3), "target": 1.2, "within_target": ratio <= 1.2}
    for key in ("device", "hf_ms_per_token", "ours_ms_per_token", "ratio", "hf_prefill_s", "ours_prefill_s"):
        print(f"{key:>18}: {result[key]}")
    finish(result)


if __name__ == "__main__":
    main(make_parser().parse_args())
