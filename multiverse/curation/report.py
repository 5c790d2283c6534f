"""The report over a checkpoint: outcomes, failure reasons, tokens, repairs, checks, independence flags.

``outcomes`` counts "ok" (Multiverse examples), "sequential" (kept as they were: nothing to parallelize)
and "failed"; ``transient_failures`` counts the failures a rerun tries again (timeouts, 429, 5xx).
"""

from collections import Counter

import numpy as np

from .checkpoint import transient_failure


def _spread(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    return {"min": round(float(arr.min()), 4), "mean": round(float(arr.mean()), 4), "max": round(float(arr.max()), 4)}


def summarize(records, wall_seconds: float | None = None) -> dict:
    records = list(records)
    ok = [r for r in records if r["outcome"] == "ok"]
    prompt = sum(r["tokens"]["prompt"] for r in records)
    completion = sum(r["tokens"]["completion"] for r in records)
    flags = [f for r in ok for f in r["independence"]]
    checks = [r["checks"] for r in records if r.get("checks")]
    kept = Counter({True: "kept", False: "lost", None: "not in source"}[c["answer_kept"]] for c in checks)
    report = {
        "items": len(records),
        "outcomes": dict(Counter(r["outcome"] for r in records)),
        "failure_reasons": dict(Counter(r["reason"] for r in records if r["outcome"] == "failed").most_common()),
        "transient_failures": sum(1 for r in records if transient_failure(r)),
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion,
                   "per_ok_item": round((prompt + completion) / len(ok), 1) if ok else None},
        "calls": sum(r["calls"] for r in records),
        "repairs_histogram": dict(sorted(Counter(r["repairs"] for r in ok).items())),
        "independence": {"flagged_items": sum(1 for r in ok if r["independence"]), "flags": len(flags),
                         "by_kind": dict(Counter(f["kind"] for f in flags))},
        "source_checks": {"answer_kept": dict(kept),
                          "length_ratio": _spread(c["length_ratio"] for c in checks),
                          "overlap": _spread(c["overlap"] for c in checks)} if checks else None,
        "structure": {key: _spread(r["stats"][key] for r in ok)
                      for key in ("blocks", "paths", "ideal_parallelism_chars")} if ok else None,
        "item_seconds": _spread(r["seconds"] for r in records),
    }
    if wall_seconds is not None:
        report["wall_seconds"] = round(wall_seconds, 3)
    return report
