"""Run a benchmark through a model in both decoding modes at several token budgets.

``parallel`` is Multiverse decoding (branches decoded together); ``autoregressive`` is the same model and
the same mask decoded one token at a time (``multiverse_parallel=False``). Both get the same
``max_new_tokens``, so a row compares them at equal total tokens; the decode steps show what each mode
paid for them in sequential model calls.
"""

import time

import torch
from tqdm.auto import tqdm

from .benchmark import Problem, grade

MODES = ("parallel", "autoregressive")


def prompt_ids(tokenizer, problem: str, system: str | None = None, chat: bool = True) -> list[int]:
    if chat and tokenizer.chat_template:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": problem}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = problem
    return tokenizer.encode(text, add_special_tokens=False)


def _left_pad(prompts: list[list[int]], pad: int):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> set:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], mode: str, budget: int, options: dict,
                   forced: list[list[int]] | None = None) -> list[dict]:
    """Completion text, tokens, decode steps and forks of each prompt."""
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (tokenizer.pad_token_id or 0)
    ids, mask = _left_pad(prompts, pad)
    ids, mask = ids.to(model.device), mask.to(model.device)
    common = dict(attention_mask=mask, max_new_tokens=budget, do_sample=False, return_dict_in_generate=True,
                  pad_token_id=pad, tokenizer=tokenizer)
    results = []
    if mode == "parallel":
        out = model.generate(ids, forced_completions=forced, **common, **options)
        for b, stats in enumerate(out.multiverse):
            text = tokenizer.decode(out.sequences[b, ids.shape[1]:], skip_special_tokens=True)
            results.append(dict(text=text, tokens=stats["tokens"], steps=stats["steps"], forks=stats["forks"]))
        return results
    if forced is not None:
        raise ValueError("forced completions replay through the parallel engine only; use modes=('parallel',)")
    # The same structure limits apply: generate enforces them with its structure logits processor.
    out = model.generate(ids, multiverse_parallel=False, **common, **options)
    eos = _eos_ids(model, tokenizer)
    for row in out.sequences[:, ids.shape[1]:].tolist():
        # The step that emits EOS is a decode step too; padding after it is not.
        n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        text = tokenizer.decode(row[:n], skip_special_tokens=True)
        results.append(dict(text=text, tokens=n, steps=n, forks=0))
    return results


def evaluate(model, tokenizer, problems: list[Problem], budgets: list[int], modes=MODES, *, batch_size: int = 8,
             system: str | None = None, chat: bool = True, options: dict | None = None,
             forced_completions: dict | None = None, progress: bool = True) -> list[dict]:
    """One record per (mode, budget, problem): the grade and what decoding cost.

    ``forced_completions`` maps a problem id to a completion text that the parallel engine replays
    (through the same budget) instead of choosing tokens: a model-independent check of the grading,
    the budgets and the statistics.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes={list(modes)}; choose from {list(MODES)}")
    bad = [b for b in budgets if not isinstance(b, int) or b < 1]
    if bad or not budgets:
        raise ValueError(f"budgets={budgets}: each max_new_tokens must be a positive integer")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    options = dict(options or {})
    encoded = [prompt_ids(tokenizer, p.problem, system, chat) for p in problems]
    batches = [range(i, min(i + batch_size, len(problems))) for i in range(0, len(problems), batch_size)]
    records = []
    with tqdm(total=len(modes) * len(budgets) * len(problems), desc="eval", unit="problem",
              disable=not progress) as bar:
        for mode in modes:
            # An untimed warm-up per mode, so that one-off start-up costs do not land on the first budget.
            generate_batch(model, tokenizer, encoded[:1], mode, 2, options)
            for budget in budgets:
                for batch in batches:
                    bar.set_postfix(mode=mode, budget=budget)
                    forced = None if forced_completions is None else \
                        [tokenizer.encode(forced_completions[problems[i].id], add_special_tokens=False) for i in batch]
                    start = time.perf_counter()
                    outs = generate_batch(model, tokenizer, [encoded[i] for i in batch], mode, budget, options, forced)
                    seconds = (time.perf_counter() - start) / len(batch)
                    for i, out in zip(batch, outs):
                        g = grade(out["text"], problems[i].answer)
                        records.append(dict(id=problems[i].id, mode=mode, max_new_tokens=budget, correct=g.correct,
                                            predicted=g.predicted, answer=problems[i].answer, tokens=out["tokens"],
                                            steps=out["steps"], forks=out["forks"], seconds=seconds,
                                            completion=out["text"]))
                    bar.update(len(batch))
    return records


def summarize(records: list[dict]) -> list[dict]:
    """One row per (mode, budget). Parallelism is total tokens over total decode steps, as in the paper."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["mode"], r["max_new_tokens"]), []).append(r)
    rows = []
    for (mode, budget), rs in sorted(groups.items(), key=lambda kv: (MODES.index(kv[0][0]), kv[0][1])):
        n, tokens, steps = len(rs), sum(r["tokens"] for r in rs), sum(r["steps"] for r in rs)
        rows.append(dict(mode=mode, max_new_tokens=budget, problems=n, correct=sum(r["correct"] for r in rs),
                         accuracy=sum(r["correct"] for r in rs) / n, mean_tokens=tokens / n, mean_steps=steps / n,
                         parallelism=tokens / steps if steps else 0.0, forks=sum(r["forks"] for r in rs) / n,
                         seconds=sum(r["seconds"] for r in rs)))
    return rows
