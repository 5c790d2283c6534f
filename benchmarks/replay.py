"""Replay a structure with forced tokens: stock HF generate (autoregressive) vs our parallel generate.

    python benchmarks/replay.py --size qwen2.5-1.5b --device cuda --structure synthetic:8x256 --prompt-tokens 2048
    python benchmarks/replay.py --size qwen2.5-7b --device cuda --structure ../shared/corpus/multiverse32b-aime24/entry_10.txt
    python benchmarks/replay.py --size tiny --device cpu --structure synthetic:4x64 --prompt-tokens 128   # CPU smoke

Both decoders emit exactly the same linearized tokens with random weights: HF through a forcing logits
processor on a plain Qwen2ForCausalLM sharing the weights, ours through ``forced_completions``.
A corpus FILE is tokenized with a tokenizer trained locally on the corpus (12 tags included) and replayed
up to its longest well-formed prefix. The last line is JSON.
"""

import argparse

import torch
from transformers import LogitsProcessor, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

from common import device_name, finish, structured_ids, timed
from multiverse.model_shapes import random_model
from multiverse.modeling_multiverse.parser import parse, well_formed_prefix
from multiverse.testing import corpus_tokenizer
from multiverse.transcripts import read_transcript


class ForceTokens(LogitsProcessor):
    """Make stock generate emit a given continuation, one token per step."""

    def __init__(self, targets: torch.Tensor, prompt_length: int):
        self.targets, self.prompt_length = targets, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, torch.finfo(scores.dtype).min)
        forced.scatter_(1, self.targets[:, step:step + 1], 0.0)
        return forced


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--structure", default="synthetic:8x256", help="FILE or synthetic:PATHSxLEN")
    p.add_argument("--prompt-tokens", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hf-cache", default="dynamic", choices=["dynamic", "static"],
                   help="static: HF's fastest path (static cache, compiled forward)")
    p.add_argument("--skip-hf", action="store_true", help="time only our engine")
    p.add_argument("--cuda-graphs", action="store_true", help="our decode steps replayed from CUDA graphs")
    p.add_argument("--repeat", type=int, default=1, help="time each run this many times and take the median")
    p.add_argument("--decode-only", action="store_true",
                   help="also time prompt + 1 token in both, and report the decode steps without the prefill")
    p.add_argument("--same-width", action="store_true",
                   help="with --decode-only's figures, also time HF's step at batch W (our widest fork) to compare "
                        "steps with as many query rows: on a CPU a step's cost grows with them, whoever runs it")
    return p


def build(args, tokenizer, model):
    tags = model.config.multiverse_tag_ids
    text_pool = torch.arange(300, 1000)
    g = torch.Generator().manual_seed(0)
    if args.structure.startswith("synthetic:"):
        paths, length = map(int, args.structure.split(":", 1)[1].lower().split("x"))
        nl = tokenizer.encode("\n")[0]
        completion = structured_ids(tags, text_pool, paths, length, newline=nl,
                                    label_ids=lambda k: tokenizer.encode(f"{k}:"), generator=g)
        prompt = text_pool[torch.randint(len(text_pool), (args.prompt_tokens,), generator=g)].tolist()
    else:
        t = read_transcript(args.structure)
        completion = tokenizer.encode(t.completion)
        completion = completion[:well_formed_prefix(completion, tags)]
        prompt = tokenizer.encode(t.prompt)
        if args.prompt_tokens > len(prompt):  # pad the real prompt with filler text in front
            filler = text_pool[torch.randint(len(text_pool), (args.prompt_tokens - len(prompt),), generator=g)]
            prompt = filler.tolist() + prompt
    return prompt, completion


def hf_replay(stock, prompt, completion, batch: int, n: int, device, static: bool = False):
    """Stock HF ``generate`` of ``batch`` copies of ``prompt``, forced to emit the first ``n`` tokens of
    ``completion`` (``static``: HF's static cache, compiled)."""
    ids = torch.tensor([prompt] * batch, device=device)
    targets = torch.tensor([completion] * batch, device=device)
    kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0,
                  logits_processor=LogitsProcessorList([ForceTokens(targets, len(prompt))]))
    if static:
        kwargs["cache_implementation"] = "static"
    return stock.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)


def stock_model(model):
    """A plain Qwen2ForCausalLM sharing the random weights: what users run without this package."""
    fields = {k: v for k, v in model.config.to_dict().items() if not k.startswith("multiverse")}
    fields.pop("model_type", None)
    config = Qwen2Config(**fields)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        stock = Qwen2ForCausalLM(config)
    stock.load_state_dict(model.state_dict(), assign=True, strict=False)
    stock.model.rotary_emb = model.model.rotary_emb
    if config.tie_word_embeddings:
        stock.lm_head.weight = stock.model.embed_tokens.weight
    return stock.eval()


def main(args):
    device = args.device
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = corpus_tokenizer()
    model = random_model(args.size, tokenizer, dtype=dtype, device=device)
    prompt, completion = build(args, tokenizer, model)
    critical = parse(completion, model.config.multiverse_tag_ids, allow_truncated=True).critical_path
    ids = torch.tensor([prompt] * args.batch, device=device)
    n = len(completion)

    def ours(part=completion):
        return model.generate(ids, forced_completions=[part] * args.batch, max_new_tokens=n + 8,
                              return_dict_in_generate=True, cuda_graphs=args.cuda_graphs)

    ours(completion if args.cuda_graphs else completion[:32])  # warm-up (captures the graphs of every width)
    mv_seconds, out = timed(ours, device, args.repeat)
    exact = all(out.sequences[b, len(prompt):len(prompt) + n].tolist() == completion for b in range(args.batch))
    steps = out.multiverse[0]["steps"]
    result = {"benchmark": "replay", "size": args.size, "device": device_name(device), "dtype": str(dtype)[6:],
              "structure": args.structure, "prompt_tokens": len(prompt), "batch": args.batch,
              "cuda_graphs": args.cuda_graphs, "tokens": n,
              "steps": steps, "critical_path": critical, "ideal_parallelism": round(n / critical, 4),
              "mv_seconds": round(mv_seconds, 3), "mv_ms_per_step": round(1000 * mv_seconds / steps, 3)}
    if args.cuda_graphs:  # the GPU time of one decode step: the held graphs replayed alone, per query width
        graphs = model._multiverse_static_decode[2].steps
        result["graph_replay_ms"] = {w: round(1000 * timed(lambda g=e[2]: [g.replay() for _ in range(20)], device)[0]
                                              / 20, 3) for w, e in sorted(graphs.items())}
    if not args.skip_hf:
        stock = stock_model(model)

        def hf(n=n):
            return hf_replay(stock, prompt, completion, args.batch, n, device, static=args.hf_cache == "static")

        hf(n if args.hf_cache == "static" else 16)  # warm-up; the static cache compiles for its full length
        ar_seconds, hf_out = timed(hf, device, args.repeat)
        exact = exact and hf_out[0, len(prompt):].tolist() == completion
        speedup = ar_seconds / mv_seconds
        result.update(ar_seconds=round(ar_seconds, 3), ar_ms_per_token=round(1000 * ar_seconds / n, 3),
                      speedup=round(speedup, 3), efficiency=round(speedup / (n / critical), 3))
        if args.decode_only or args.same_width:  # the prefill (and the first token) taken out of both
            mv_first, first = timed(lambda: ours(completion[:1]), device, args.repeat)
            ar_first = timed(lambda: hf(1), device, args.repeat)[0]
            mv_step = (mv_seconds - mv_first) / (steps - first.multiverse[0]["steps"])
            ar_step = (ar_seconds - ar_first) / (n - 1)
            result.update(mv_decode_ms_per_step=round(1000 * mv_step, 3), ar_decode_ms_per_token=round(1000 * ar_step, 3),
                          decode_efficiency=round(ar_step / mv_step, 3))
        if args.same_width:
            result.update(same_width(stock, prompt, completion, out.multiverse[0], device, mv_step))
    result["exact_match"] = exact
    for key in ("tokens", "steps", "ideal_parallelism", "mv_seconds", "mv_ms_per_step", "graph_replay_ms", "ar_seconds",
                "ar_ms_per_token", "speedup", "efficiency", "mv_decode_ms_per_step", "ar_decode_ms_per_token",
                "decode_efficiency", "mean_width", "hf_ms_per_step_at_width", "same_width_efficiency", "exact_match"):
        if key in result:
            print(f"{key:>18}: {result[key]}")
    finish(result)


def widest_fork(stats) -> int:
    """The most paths one fork opened (a step decodes at least that many branches)."""
    children = {}
    for b in stats["branches"]:
        children[b["parent"]] = children.get(b["parent"], 0) + 1
    return max([1] + [k for parent, k in children.items() if parent is not None])


def same_width(stock, prompt, completion, stats, device, mv_step: float) -> dict:
    """HF's decode step at batch 1 and at batch W (our widest fork), prefill taken out, interpolated to our mean
    width (tokens / steps): what HF's own loop pays for as many query rows per step as ours."""
    width, n = widest_fork(stats), len(completion)
    per_step = {}
    for batch in sorted({1, width}):
        def hf(k, batch=batch):
            return hf_replay(stock, prompt, completion, batch, k, device)
        hf(2)
        k = min(n, 33)
        per_step[batch] = (timed(lambda: hf(k), device)[0] - timed(lambda: hf(1), device)[0]) / (k - 1)
    mean = n / stats["steps"]
    at = per_step[1] + (per_step[width] - per_step[1]) * (mean - 1) / max(1, width - 1)
    return {"mean_width": round(mean, 3), "hf_ms_per_step_at_width": {w: round(1000 * t, 3) for w, t in per_step.items()},
            "same_width_efficiency": round(at / mv_step, 3)}


if __name__ == "__main__":
    main(make_parser().parse_args())
