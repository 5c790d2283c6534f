"""Throughput on an evaluation-shaped workload: continuous batching vs static batches vs HF's generate_batch.

    python benchmarks/throughput.py                                   # CPU, tiny shape: 64 prompts x 4 samples
    python benchmarks/throughput.py --size qwen2.5-1.5b --device cuda --cuda-graphs --rows 32

The workload: ``--prompts`` prompts from the corpus transcripts, each with ``--samples`` output rows
(``num_return_sequences``). Every output row replays (``forced_completions``, one per row) a window of a real
Multiverse-32B completion that starts at one of its ``<Parallel>`` blocks, cut at a length drawn log-uniformly
from [--min-len, --max-len] (at least 10x apart), so rows end at very different times, as real samples do.
Random weights: the forced tokens make every mode decode exactly the same tokens.

``--rows`` prompts decode at once (``--rows x --samples`` output rows), in both row layouts of the engine
(``share_prompt_rows``): *shared*, a prompt's samples in one cache row over one copy of its KV, the row held
until the last sample ends; *own*, one cache row per sample, freed as soon as it ends (the engine's default
when its rows come from memory, not every prompt fits at once and a prompt is no longer than the budget, as here;
``--rows`` stands for that memory).
(a) continuous: one ``generate`` over all prompts: a freed cache row is refilled with the next waiting prompt
    (or sample); (a') ``spare_rows``: shared rows, the same output rows at once (``max_live_samples``) over
    twice the cache rows, so a prompt is admitted as soon as enough samples ended; (b) static: the same engine
    on batches of ``--rows`` prompts, one after the other, each as long as its slowest row; (c) HF's continuous
    batching (``generate_batch``'s manager, paged cache) decoding each row's token count autoregressively with a
    plain Qwen2 of the same shape, ``--rows x --samples`` requests at a time (as many sequences as (a) decodes at
    once). ``continuous_vs_static`` compares (a) and (b) in the engine's default layout;
    ``best_continuous_vs_best_static`` the fastest of each, whatever the layout.
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


def ours(model, prompts, forced, args, rows, share, live=None):
    """``rows`` prompts decode at once: as ``rows`` cache rows when samples share their prompt's row, as
    ``rows x samples`` one-sample rows when they do not (the same output rows either way)."""
    ids, mask = left_padded(prompts, model.device)
    return model.generate(ids, attention_mask=mask, forced_completions=forced, do_sample=True,
                          num_return_sequences=args.samples, max_new_tokens=max(len(f) for f in forced) + 64,
                          max_batch_rows=rows if share else rows * args.samples, share_prompt_rows=share,
                          max_live_samples=live, return_dict_in_generate=True, cuda_graphs=args.cuda_graphs)


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
    ours(model, prompts[:2], forced[:2 * n], args, 2, True)  # warm-up
    # The engine's default layout for this workload when its rows come from memory and not every prompt fits at
    # once (--rows stands for that memory): own rows per sample, as the prompt is no longer than the budget.
    default_share = max(len(p) for p in prompts) > max(len(f) for f in forced) + 64
    runs, timed = {}, {}

    def measure(name, call):
        sync(device)
        start = time.perf_counter()
        with CountSteps() as counted:
            rows = call()
        sync(device)
        timed[name] = (time.perf_counter() - start, counted.count)
        runs[name] = rows

    for share, tag in ((True, "shared"), (False, "own")):
        measure(f"continuous_{tag}", lambda: ours(model, prompts, forced, args, args.rows, share).multiverse)

        def static(share=share):
            rows = []
            for b in range(0, len(prompts), args.rows):
                rows += ours(model, prompts[b:b + args.rows], forced[b * n:(b + args.rows) * n], args, args.rows,
                             share).multiverse
            return rows
        measure(f"static_{tag}", static)
    # (a') shared rows, the same output rows at once over 2x the cache rows: a prompt is admitted once enough of
    # the live samples ended (max_live_samples)
    measure("spare_rows", lambda: ours(model, prompts, forced, args, 2 * args.rows, True, args.rows * n).multiverse)

    stats = runs["continuous_shared"]
    tokens, steps = sum(s["tokens"] for s in stats), sum(s["steps"] for s in stats)
    for name, rows in runs.items():
        assert [s["tokens"] for s in rows] == [s["tokens"] for s in stats], f"{name} decoded different tokens"
    assert tokens == sum(len(f) for f in forced)
    lengths = sorted(len(f) for f in forced)
    default = "shared" if default_share else "own"
    result = {"benchmark": "throughput", "size": args.size, "device": device_name(device), "dtype": str(dtype)[6:],
              "prompts": len(prompts), "samples": n, "rows": args.rows, "cuda_graphs": args.cuda_graphs,
              "row_tokens_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
              "tokens": tokens, "steps": steps, "ideal_parallelism": round(tokens / steps, 3),
              "default_rows": default}
    for name, (seconds, engine_steps) in timed.items():
        # occupancy: output rows busy per engine step over the rows x samples there are room for
        result.update({f"{name}_s": round(seconds, 3), f"{name}_tok_s": round(tokens / seconds, 1),
                       f"{name}_engine_steps": engine_steps,
                       f"{name}_occupancy": round(steps / (engine_steps * args.rows * n), 3)})
    # The headline: the engine's defaults, continuous against static batches of the same rows
    continuous_s, static_s = timed[f"continuous_{default}"][0], timed[f"static_{default}"][0]
    result.update(continuous_tok_s=round(tokens / continuous_s, 1), static_tok_s=round(tokens / static_s, 1),
                  continuous_vs_static=round(static_s / continuous_s, 3),
                  best_continuous_vs_best_static=round(min(timed["static_shared"][0], timed["static_own"][0])
                                                       / min(v[0] for k, v in timed.items() if k != "static_shared"
                                                             and k != "static_own"), 3))
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
