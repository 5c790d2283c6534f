"""Run a benchmark through a model in both decoding modes, at several budgets, K samples per problem.

Both modes run through the same engine, batching included: ``parallel`` is Multiverse decoding (branches
decoded together); ``autoregressive`` is the same model decoding a block's paths one after another
(``sequential_paths=True``: one branch live at a time, positions and visibility as in training). The budget rule:
- ``total``: ``max_new_tokens`` counts every generated token, in both modes;
- ``critical-path`` (the reference engine's): the budget bounds the decode steps of the parallel engine
  (``max_critical_path``), with ``max_total_tokens`` (default 4x the budget) as a memory cap on all the
  tokens. Autoregressive decoding spends one step per token, so there both rules bound the tokens.

Each (mode, budget, sample) is one continuous batch over the problems still to do, ``batch_size`` decoding at
once: a finished problem's cache row takes the next one, and its record is written as soon as it is done.
Problem ``p`` of sample ``s`` is seeded with ``seed + SAMPLE_STRIDE * s + p``, and a completion depends only on
its own seed, so a resumed run gives what an uninterrupted one would have.
"""

import time

import torch
from tqdm.auto import tqdm

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
                   seed: int | list = 0, max_total_tokens: int | None = None, max_batch_rows: int | None = None,
                   on_result=None) -> list[dict]:
    """Completion text (tags kept), tokens, decode steps, forks, critical path and seconds of each prompt.

    ``seed``: prompt ``i`` gets ``seed + i``, or ``seed[i]`` from a list. ``max_batch_rows`` prompts decode at once
    (continuous batching); ``on_result(i, result)`` is called as prompt ``i`` finishes.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose from {list(MODES)}")
    sampling = dict(sampling or {})
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (tokenizer.pad_token_id or 0)
    ids, mask = left_pad(prompts, pad)
    temperature = sampling.pop("temperature", 0.0) or 0.0
    decoding = dict(do_sample=temperature > 0, **({"temperature": temperature, **sampling} if temperature > 0 else {}))
    eos = _eos_ids(model, tokenizer)
    results, clock = [None] * len(prompts), [time.perf_counter()]

    def done(i, outputs):
        (out,) = outputs
        stats, row = out.multiverse, _cut(out.completion, eos, pad)
        now = time.perf_counter()
        # ``seconds``: the wall time this completion added to the batch (since the batch's previous one finished),
        # so a run's records sum to its decoding time; ``latency``: its own admission to done.
        results[i] = dict(text=completion_text(tokenizer, row), tokens=stats["tokens"], steps=stats["steps"],
                          forks=stats["forks"], critical_path=stats["critical_path"], seconds=now - clock[0],
                          latency=stats["seconds"], events={k: v for k, v in stats["events"].items() if v})
        clock[0] = now
        if on_result is not None:
            on_result(i, results[i])

    model.generate(ids.to(model.device), attention_mask=mask.to(model.device), pad_token_id=pad,
                   tokenizer=tokenizer, forced_completions=forced, seed=seed, max_batch_rows=max_batch_rows,
                   sequential_paths=mode == "autoregressive", on_prompt_done=done, **decoding,
                   **budget_kwargs(mode, budget, rule, max_total_tokens), **options)
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
    work = []  # (mode, budget, sample, the problems it still needs)
    for mode in modes:
        for budget in budgets:
            for sample in range(num_samples):
                todo = [i for i, p in enumerate(problems) if (mode, budget, p.id, sample) not in done]
                if todo:
                    work.append((mode, budget, sample, todo))
    records = []
    with tqdm(total=sum(len(w[3]) for w in work), desc="eval", unit="completion", disable=not progress) as bar:
        warmed = set()
        for mode, budget, sample, todo in work:
            if mode not in warmed:  # untimed, so one-off start-up costs do not land on the first problems
                generate_batch(model, tokenizer, encoded[:1], mode, 2, options)
                warmed.add(mode)
            bar.set_postfix(mode=mode, budget=budget, sample=sample)
            forced = None if forced_completions is None else \
                [tokenizer.encode(forced_completions[problems[i].id], add_special_tokens=False) for i in todo]

            def record(j, out, mode=mode, budget=budget, sample=sample, todo=todo):
                problem = problems[todo[j]]
                g = grade_problem(out["text"], problem)
                entry = dict(id=problem.id, sample=sample, mode=mode, max_new_tokens=budget, budget=budget_rule,
                             kind="choice" if problem.choices else "math",
                             correct=g.correct, predicted=g.predicted, answer=problem.answer,
                             tokens=out["tokens"], steps=out["steps"], forks=out["forks"],
                             critical_path=out["critical_path"],
                             degree_of_parallelism=round(out["tokens"] / out["critical_path"], 4)
                             if out["critical_path"] else 1.0,
                             seconds=round(out["seconds"], 4), latency=round(out["latency"], 4),
                             events=out["events"], completion=out["text"])
                records.append(entry)
                if log is not None:
                    log.append(entry)  # written as soon as it is done: an interruption loses only unfinished work
                bar.update(1)

            generate_batch(model, tokenizer, [encoded[i] for i in todo], mode, budget, options, forced,
                           rule=budget_rule, sampling=sampling, max_total_tokens=max_total_tokens,
                           seed=[base_seed + SAMPLE_STRIDE * sample + i for i in todo], max_batch_rows=batch_size,
                           on_result=record)
    if log is None:
        return records
    wanted = {(m, b, p.id, s) for m in modes for b in budgets for p in problems for s in range(num_samples)}
    return [r for r in log.records if record_key(r) in wanted]
