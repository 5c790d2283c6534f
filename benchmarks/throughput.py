"""Throughput on an evaluation-shaped workload: continuous batching vs static batches vs HF's generate_batch.

    python benchmarks/throughput.py                                   # CPU, tiny shape: 64 prompts x 4 samples
    python benchmarks/throughput.py --size qwen2.5-1.5b --device cuda --cuda-graphs --rows 32

The workload: ``--prompts`` prompts from the corpus transcripts, each with ``--samples`` output rows
(``num_return_sequences``). Every output row replays (``forced_completions``, one per row) a window of a real
Multiverse-32B completion that starts at one of its ``<Parallel>`` blocks, cut at a length drawn log-uniformly
from [--min-len, --max-len] (at least 10x apart), so rows end at very different times, as real samples do.
Random weights: the forced tokens make every mode decode exactly the same tokens.

(a) continuous: one ``generate`` over all prompts with ``max_batch_rows=--rows``: a finished prompt's cache row
    is refilled with the next waiting prompt; (a') ``spare_rows``: the same ``--rows x --samples`` output rows
    at once (``max_live_samples``) over twice the cache rows, so a prompt is admitted as soon as enough samples
    ended (the samples of a prompt share its cache row until the last one ends); (b) static: the same engine
    on batches of ``--rows`` prompts, one after the other, each as long as its slowest row; (c) HF's continuous batching (``generate_batch``'s
    manager, paged cache) decoding each row's token count autoregressively with a plain Qwen2 of the same shape,
    ``--rows x --samples`` requests at a time (as many sequences as (a) decodes at once).
The last line is JSON.
"""

import argparse
import math
import time

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from common import device_name, finish, sync
from multiverse.model_shapes import random_model
from multiverse.modeling_multiverse.runner import ModelRunner
from multiverse.modeling_multiverse.parser import well_formed_prefix
from multiverse.testing import corpus_files, corpus_tokenizer
from multiverse.transcripts import read_transcript


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=4, help="num_return_sequences")
    p.add_argument("--rows", type=int, default=8, help="max_batch_rows: prompts decoding at once")
    p.add_argument("--min-len", type=int, default=40)
    p.add_argument("--max-len", type=int, default=640)
    p.add_argument("--prompt-tokens", type=int, default=192, help="keep the last N tokens of each prompt")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (a tiny model is fastest on one)")
    return p


def workload(args, tokenizer, tags):
    """Prompts and one forced completion per output row (prompt-major)."""
    g = torch.Generator().manual_seed(args.seed)
    sources = []
    for path in corpus_files():
        t = read_transcript(path)
        completion = tokenizer.encode(t.completion)
        completion = completion[:well_formed_prefix(completion, tags)]
        starts = [i for i, tok in enumerate(completion) if tok == tags[2]] or [0]  # <Parallel>
        sources.append((tokenizer.encode(t.prompt)[-args.prompt_tokens:], completion, starts))
    prompts, forced = [], []
    for p in range(args.prompts):
        prompt, completion, starts = sources[p % len(sources)]
        prompts.append(prompt)
        for _ in range(args.samples):
            start = starts[int(torch.randint(len(starts), (1,), generator=g))]
            u = float(torch.rand((), generator=g))
            length = round(math.exp(math.log(args.min_len) + u * (math.log(args.max_len) - math.log(args.min_len))))
            forced.append(completion[start:start + length])
    return prompts, forced


def left_padded(prompts, device):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):], mask[b, width - len(p):] = torch.tensor(p), 1
    return ids.to(device), mask.to(device)


def ours(model, prompts, forced, args, rows, live=None):
    ids, mask = left_padded(prompts, model.device)
    return model.generate(ids, attention_mask=mask, forced_completions=forced, do_sample=True,
                          num_return_sequences=args.samples, max_new_tokens=max(len(f) for f in forced) + 64,
                          max_batch_rows=rows, max_live_samples=live, return_dict_in_generate=True,
                          cuda_graphs=args.cuda_graphs)


def stock_model(model):
    """A plain Qwen2ForCausalLM of the same shape and weights."""
    fields = {k: v for k, v in model.config.to_dict().items() if not k.startswith("multiverse")}
    fields.pop("model_type", None)
    stock = Qwen2ForCausalLM(Qwen2Config(**fields)).to(device=model.device, dtype=model.dtype)
    stock.load_state_dict(model.state_dict(), strict=False)
    return stock.eval()


def hf_continuous(stock, requests, concurrent: int, page_size: int = 64):
    """HF's continuous batching (the manager behind ``generate_batch``), a max_new_tokens per request."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    gc = GenerationConfig(do_sample=False, max_new_tokens=max(n for _, n in requests), eos_token_id=-1,
                          pad_token_id=0)
    longest = max(len(p) + n for p, n in requests)
    blocks = concurrent * -(-longest // page_size) + 8  # CPU: size the paged cache, not from free memory
    config = ContinuousBatchingConfig(max_requests_per_batch=concurrent, num_blocks=blocks, page_size=page_size,
                                      use_cuda_graph=stock.device.type == "cuda")
    with stock.continuous_batching_context_manager(generation_config=gc, continuous_batching_config=config,
                                                   block=True, timeout=5) as manager:
        start = time.perf_counter()
        for prompt, n in requests:
            manager.add_request(prompt, max_new_tokens=n)
        done = {}
        while len(done) < len(requests):
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                done[result.request_id] = result
            elif result is None and not manager.is_running():
                raise RuntimeError("HF's continuous batching manager stopped")
        seconds = time.perf_counter() - start
    return seconds, sum(len(r.generated_tokens) for r in done.values())


class CountSteps:
    """Counts the engine's decode forwards (its steps over all rows)."""

    def __enter__(self):
        self.count, self.decode = 0, ModelRunner.decode

        def counted(runner, *a, **k):
            self.count += 1
            return self.decode(runner, *a, **k)
        ModelRunner.decode = counted
        return self

    def __exit__(self, *exc):
        ModelRunner.decode = self.decode


def main(args):
    device = args.device
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = corpus_tokenizer()
    model = random_model(args.size, tokenizer, dtype=dtype, device=device)
    prompts, forced = workload(args, tokenizer, model.config.multiverse_tag_ids)
    n = args.samples
    ours(model, prompts[:2], forced[:2 * n], args, 2)  # warm-up

    sync(device)
    start = time.perf_counter()
    with CountSteps() as continuous_steps:
        continuous = ours(model, prompts, forced, args, args.rows)
    sync(device)
    continuous_s = time.perf_counter() - start

    # (a') the same output rows at once, but 2x the cache rows: a prompt is admitted once enough samples ended
    start = time.perf_counter()
    with CountSteps() as spare_steps:
        spare = ours(model, prompts, forced, args, 2 * args.rows, args.rows * n)
    sync(device)
    spare_s = time.perf_counter() - start

    start, static_rows = time.perf_counter(), []
    with CountSteps() as static_steps:
        for b in range(0, len(prompts), args.rows):
            out = ours(model, prompts[b:b + args.rows], forced[b * n:(b + args.rows) * n], args, args.rows)
            static_rows += [(out.sequences[r], s) for r, s in enumerate(out.multiverse)]
    sync(device)
    static_s = time.perf_counter() - start

    stats = continuous.multiverse
    tokens, steps = sum(s["tokens"] for s in stats), sum(s["steps"] for s in stats)
    counts = [s["tokens"] for s in stats]
    same = counts == [s["tokens"] for _, s in static_rows] == [s["tokens"] for s in spare.multiverse]
    assert same and tokens == sum(len(f) for f in forced), "continuous and static batching decoded different tokens"
    lengths = sorted(len(f) for f in forced)
    result = {"benchmark": "throughput", "size": args.size, "device": device_name(device), "dtype": str(dtype)[6:],
              "prompts": len(prompts), "samples": n, "rows": args.rows, "cuda_graphs": args.cuda_graphs,
              "row_tokens_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
              "tokens": tokens, "steps": steps, "ideal_parallelism": round(tokens / steps, 3),
              "continuous_s": round(continuous_s, 3), "static_s": round(static_s, 3),
              "continuous_engine_steps": continuous_steps.count, "static_engine_steps": static_steps.count,
              # output rows busy per engine step over the rows x samples there are room for
              "continuous_occupancy": round(steps / (continuous_steps.count * args.rows * n), 3),
              "static_occupancy": round(steps / (static_steps.count * args.rows * n), 3),
              "continuous_tok_s": round(tokens / continuous_s, 1), "static_tok_s": round(tokens / static_s, 1)}
    result["continuous_vs_static"] = round(static_s / continuous_s, 3)
    result.update(spare_rows_s=round(spare_s, 3), spare_rows_tok_s=round(tokens / spare_s, 1),
                  spare_rows_engine_steps=spare_steps.count,
                  spare_rows_occupancy=round(steps / (spare_steps.count * args.rows * n), 3),
                  spare_rows_vs_static=round(static_s / spare_s, 3))
    if not args.skip_hf:
        stock = stock_model(model)
        requests = [(prompts[r // n], s["tokens"]) for r, s in enumerate(stats) if s["tokens"]]
        hf_continuous(stock, requests[:4], 4)  # warm-up
        hf_s, hf_tokens = hf_continuous(stock, requests, args.rows * n)
        assert hf_tokens == tokens, f"HF decoded {hf_tokens} tokens, ours {tokens}"
        result.update(hf_cb_s=round(hf_s, 3), hf_cb_tok_s=round(tokens / hf_s, 1),
                      continuous_vs_hf_cb=round(hf_s / continuous_s, 3),
                      target_vs_hf_cb=round(0.8 * tokens / steps, 3))
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    finish({k: result[k] for k in ("tokens", "continuous_tok_s", "static_tok_s", "hf_cb_tok_s", "continuous_vs_static",
                                   "continuous_vs_hf_cb", "device") if k in result} | result)


if __name__ == "__main__":
    main(make_parser().parse_args())
