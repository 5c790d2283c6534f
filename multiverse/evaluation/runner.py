"""Run a benchmark through a model in both decoding modes, at several budgets, K samples per problem.

``parallel`` is Multiverse decoding (branches decoded together); ``autoregressive`` is the same model and
the same mask decoded one token at a time (``multiverse_parallel=False``). The budget rule:
- ``total``: ``max_new_tokens`` counts every generated token, in both modes;
- ``critical-path`` (the reference engine's): the budget bounds the decode steps of the parallel engine
  (``max_critical_path``), with ``max_total_tokens`` (default 4x the budget) as a memory cap on all the
  tokens. Autoregressive decoding spends one step per token, so there both rules bound the tokens.

Work is cut into fixed batches of consecutive problems per (mode, budget, sample). Row ``p`` of sample
``s`` is seeded with ``seed + SAMPLE_STRIDE * s + p``, so a completion does not depend on which batches an
interrupted run had finished: a resumed run gives what an uninterrupted one would have.
"""

import time

import torch
from tqdm.auto import tqdm

from ..modeling_multiverse.parser import parse
from ..modeling_multiverse.tags import PARALLEL
from ..transcripts import completion_text
from .benchmark import Problem
from .grading import grade_problem
from .prompts import PRESETS, Preset, prompt_ids
from .records import record_key

MODES = ("parallel", "autoregressive")
BUDGETS = ("total", "critical-path")
SAMPLE_STRIDE = 1_000_003
TOTAL_CAP = 4  # default max_total_tokens = TOTAL_CAP x budget under the critical-path rule


def left_pad(prompts: list[list[int]], pad: int):
    """[B, W] ids and attention mask of ``prompts`` left-padded with ``pad``, as HF batches decoder prompts."""
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


def _cut(row: list[int], eos: set, pad: int) -> list[int]:
    """The completion's own tokens: up to and with the first EOS, else without the padding after it."""
    n = next((i + 1 for i, t in enumerate(row) if t in eos), None)
    if n is None:
        n = len(row)
        while n and row[n - 1] == pad:
            n -= 1
    return row[:n]


def budget_kwargs(mode: str, budget: int, rule: str, max_total_tokens: int | None = None) -> dict:
    """The ``generate`` kwargs that apply ``budget`` under ``rule`` ("total" or "critical-path")."""
    if rule not in BUDGETS:
        raise ValueError(f"budget rule {rule!r}; choose from {', '.join(BUDGETS)}")
    if rule == "total" or mode == "autoregressive":
        return dict(max_new_tokens=budget)
    return dict(max_new_tokens=max_total_tokens or TOTAL_CAP * budget, max_critical_path=budget)


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], mode: str, budget: int, options: dict,
                   forced: list[list[int]] | None = None, *, rule: str = "total", sampling: dict | None = None,
                   seed: int = 0, max_total_tokens: int | None = None) -> list[dict]:
    """Completion text (tags kept), tokens, decode steps, forks and critical path of each prompt."""
    sampling = dict(sampling or {})
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (tokenizer.pad_token_id or 0)
    ids, mask = left_pad(prompts, pad)
    ids, mask = ids.to(model.device), mask.to(model.device)
    temperature = sampling.pop("temperature", 0.0) or 0.0
    decoding = dict(do_sample=temperature > 0, **({"temperature": temperature, **sampling} if temperature > 0 else {}))
    common = dict(attention_mask=mask, return_dict_in_generate=True, pad_token_id=pad, tokenizer=tokenizer,
                  **decoding, **budget_kwargs(mode, budget, rule, max_total_tokens))
    eos, tags = _eos_ids(model, tokenizer), list(model.config.multiverse_tag_ids)
    results = []
    if mode == "parallel":
        out = model.generate(ids, forced_completions=forced, seed=seed, **common, **options)
        for b, stats in enumerate(out.multiverse):
            row = _cut(out.sequences[b, ids.shape[1]:].tolist(), eos, pad)
            results.append(dict(text=completion_text(tokenizer, row), tokens=stats["tokens"], steps=stats["steps"],
                                forks=stats["forks"], critical_path=stats["critical_path"],
                                events={k: v for k, v in stats["events"].items() if v}))
        return results
    if forced is not None:
        raise ValueError("forced completions replay through the parallel engine only; use modes=('parallel',)")
    torch.manual_seed(seed)  # HF sampling draws from the global generator
    # The same structure limits apply: generate enforces them with its structure logits processor.
    out = model.generate(ids, multiverse_parallel=False, **common, **options)
    for full in out.sequences[:, ids.shape[1]:].tolist():
        row = _cut(full, eos, pad)  # the step that emits EOS is a decode step too; padding after it is not
        critical = parse(row, tags).critical_path if row else 0
        results.append(dict(text=completion_text(tokenizer, row), tokens=len(row), steps=len(row),
                            forks=sum(t == tags[PARALLEL] for t in row), critical_path=critical, events={}))
    return results


def evaluate(model, tokenizer, problems: list[Problem], budgets: list[int], modes=MODES, *, batch_size: int = 8,
             preset: Preset | None = None, chat: bool = True, options: dict | None = None,
             sampling: dict | None = None, num_samples: int = 1, budget_rule: str = "total",
             max_total_tokens: int | None = None, forced_completions: dict | None = None, progress: bool = True,
             log=None) -> list[dict]:
    """One record per (mode, budget, problem, sample): the grade, the completion and what decoding cost.

    ``log`` (a ``records.RecordLog``) receives each record as soon as its batch is done, and its records
    are skipped. ``forced_completions`` maps a problem id to a completion text that the parallel engine
    replays (through the same budget) instead of choosing tokens: a model-independent check of grading,
    budgets and statistics.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes={list(modes)}; choose from {list(MODES)}")
    bad = [b for b in budgets if not isinstance(b, int) or b < 1]
    if bad or not budgets:
        raise ValueError(f"budgets={budgets}: each max_new_tokens must be a positive integer")
    if batch_size < 1 or num_samples < 1:
        raise ValueError(f"batch_size={batch_size} and num_samples={num_samples} must be at least 1")
    sampling = dict(sampling or {})
    if num_samples > 1 and not sampling.get("temperature"):
        raise ValueError(f"num_samples={num_samples} with greedy decoding repeats one completion; "
                         "set a temperature > 0 (e.g. --temperature 0.6)")
    base_seed = sampling.pop("seed", 0) or 0
    budget_kwargs("parallel", 1, budget_rule)  # checks the rule before any work
    preset = preset or PRESETS["plain"]
    options, done = dict(options or {}), (log.done if log is not None else set())
    encoded = [prompt_ids(tokenizer, p.problem, preset, chat) for p in problems]
    batches = [range(i, min(i + batch_size, len(problems))) for i in range(0, len(problems), batch_size)]
    work = [(mode, budget, sample, batch) for mode in modes for budget in budgets for sample in range(num_samples)
            for batch in batches]
    todo = [w for w in work if any((w[0], w[1], problems[i].id, w[2]) not in done for i in w[3])]
    records = []
    with tqdm(total=sum(len(w[3]) for w in todo), desc="eval", unit="completion", disable=not progress) as bar:
        warmed = set()
        for mode, budget, sample, batch in todo:
            if mode not in warmed:  # untimed, so one-off start-up costs do not land on the first batch
                generate_batch(model, tokenizer, encoded[:1], mode, 2, options)
                warmed.add(mode)
            bar.set_postfix(mode=mode, budget=budget, sample=sample)
            forced = None if forced_completions is None else \
                [tokenizer.encode(forced_completions[problems[i].id], add_special_tokens=False) for i in batch]
            start = time.perf_counter()
            outs = generate_batch(model, tokenizer, [encoded[i] for i in batch], mode, budget, options, forced,
                                  rule=budget_rule, sampling=sampling, max_total_tokens=max_total_tokens,
                                  seed=base_seed + SAMPLE_STRIDE * sample + batch[0])
            seconds = (time.perf_counter() - start) / len(batch)
            for i, out in zip(batch, outs):
                problem = problems[i]
                if (mode, budget, problem.id, sample) in done:
                    continue  # finished before an interruption; made again only because its batch was cut
                g = grade_problem(out["text"], problem)
                record = dict(id=problem.id, sample=sample, mode=mode, max_new_tokens=budget, budget=budget_rule,
                              kind="choice" if problem.choices else "math",
                              correct=g.correct, predicted=g.predicted, answer=problem.answer,
                              tokens=out["tokens"], steps=out["steps"], forks=out["forks"],
                              critical_path=out["critical_path"],
                              degree_of_parallelism=round(out["tokens"] / out["critical_path"], 4)
                              if out["critical_path"] else 1.0,
                              seconds=round(seconds, 4), events=out["events"], completion=out["text"])
                records.append(record)
                if log is not None:
                    log.append(record)
            bar.update(len(batch))
    if log is None:
        return records
    wanted = {(m, b, p.id, s) for m in modes for b in budgets for p in problems for s in range(num_samples)}
    return [r for r in log.records if record_key(r) in wanted]
