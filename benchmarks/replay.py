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
    mv_seconds, out = timed(ours, device)
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
        targets = torch.tensor([completion] * args.batch, device=device)

        def hf(n=n):
            kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                          pad_token_id=0, logits_processor=LogitsProcessorList([ForceTokens(targets, len(prompt))]))
            if args.hf_cache == "static":
                kwargs["cache_implementation"] = "static"
            return stock.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)

        hf(n if args.hf_cache == "static" else 16)  # warm-up; the static cache compiles for its full length
        ar_seconds, hf_out = timed(hf, device)
        exact = exact and hf_out[0, len(prompt):].tolist() == completion
        speedup = ar_seconds / mv_seconds
        result.update(ar_seconds=round(ar_seconds, 3), ar_ms_per_token=round(1000 * ar_seconds / n, 3),
                      speedup=round(speedup, 3), efficiency=round(speedup / (n / critical), 3))
    result["exact_match"] = exact
    for key in ("tokens", "steps", "ideal_parallelism", "mv_seconds", "mv_ms_per_step", "graph_replay_ms", "ar_seconds",
                "ar_ms_per_token", "speedup", "efficiency", "exact_match"):
        if key in result:
            print(f"{key:>18}: {result[key]}")
    finish(result)


if __name__ == "__main__":
    main(make_parser().parse_args())
