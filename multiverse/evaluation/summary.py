"""One summary row per (mode, budget): avg@K accuracy with its standard error, pass@K, and the structure.

- ``accuracy`` is avg@K: the mean over problems of each problem's share of correct samples (the paper's
  pass@1 averaged over samples); ``stderr`` its standard error over problems (sample std / sqrt(n));
- ``pass_at_k``: the share of problems with at least one correct sample among their K;
- ``trigger_rate``: the share of completions with at least one fork;
- ``degree``: generated tokens / critical path, summed over completions (the structure's parallelism);
  ``parallelism``: generated tokens / decode steps (what the decoder achieved).
"""

import math

from .runner import MODES


def _row(mode: str, budget: int, rs: list[dict]) -> dict:
    by_problem: dict = {}
    for r in rs:
        by_problem.setdefault(str(r["id"]), []).append(r["correct"])
    shares = [sum(v) / len(v) for v in by_problem.values()]
    n, count = len(shares), len(rs)
    mean = sum(shares) / n
    stderr = math.sqrt(sum((s - mean) ** 2 for s in shares) / (n - 1) / n) if n > 1 else 0.0
    tokens, steps = sum(r["tokens"] for r in rs), sum(r["steps"] for r in rs)
    critical = sum(r.get("critical_path", r["tokens"]) for r in rs)
    return dict(mode=mode, max_new_tokens=budget, budget=rs[0].get("budget", "total"), problems=n,
                samples=max(len(v) for v in by_problem.values()), completions=count,
                correct=sum(r["correct"] for r in rs), accuracy=mean, stderr=stderr,
                pass_at_k=sum(any(v) for v in by_problem.values()) / n,
                answered=sum(r.get("predicted") is not None for r in rs) / count,
                trigger_rate=sum(r["forks"] > 0 for r in rs) / count,
                degree=tokens / critical if critical else 1.0, mean_critical_path=critical / count,
                mean_tokens=tokens / count, mean_steps=steps / count,
                parallelism=tokens / steps if steps else 0.0, forks=sum(r["forks"] for r in rs) / count,
                seconds=sum(r["seconds"] for r in rs))


def summarize(records: list[dict]) -> list[dict]:
    """One row per (mode, budget), parallel first, budgets ascending."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["mode"], r["max_new_tokens"]), []).append(r)
    order = sorted(groups, key=lambda k: (MODES.index(k[0]), k[1]))
    return [_row(mode, budget, groups[mode, budget]) for mode, budget in order]
