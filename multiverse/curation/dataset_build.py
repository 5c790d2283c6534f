"""Stage 5: build the SFT dataset from finished records.

Layout of OUTPUT (``datasets.DatasetDict.save_to_disk``; ``load_from_disk(OUTPUT)``):
- ``train``: the Multiverse examples and the sequential ones (items whose plan found nothing to run in
  parallel: their source trace, as the paper's mixed data keeps them), in input order; with ``mix`` the
  autoregressive-to-Multiverse curriculum;
- ``autoregressive``: every example with the structure stripped, for the baseline.

Rows are TRL conversational prompt-completion examples:
``prompt = [{"role": "user", ...}]`` (a system turn first when given) and
``completion = [{"role": "assistant", "content": "<Think>\\n{trace}\\n</Think>\\n{answer}"}]``.
The ``<Think>`` wrapper matches the published Multiverse data and corpus: the reasoning (with its
blocks) is thought, the answer text after ``</Think>`` is what the user reads. Autoregressive rows use
the same wrapper around ``validate.strip_structure(trace)`` so that mixing them changes only the
structure, never the framing. Extra columns: ``id``, ``format`` ("multiverse", "sequential" or
"autoregressive") and ``answer``.

The user turn follows the reference's training data (the ``multiverse-train`` preset of ``multiverse eval``
and ``generate``): the question, then " Think step by step and in parallel before answering." for a
Multiverse example or " Think step by step before answering." for a sequential or autoregressive one.
``prompt_suffixes=False`` leaves the bare question (the toy task, which is evaluated with plain prompts).
"""

import random

from ..evaluation.prompts import PARALLEL_SUFFIX, SEQUENTIAL_SUFFIX
from ..modeling_multiverse.tags import TAG_PATTERN
from .validate import strip_structure, validate_trace

FORMATS = ("multiverse", "sequential", "autoregressive")
KEPT = ("ok", "sequential")  # the record outcomes that become examples


def check_mix(mix: float | None):
    if mix is not None and not 0 <= mix <= 1:
        raise ValueError(f"--mix {mix}: must lie in [0, 1] (the share of examples also given autoregressively)")


def completion_text(trace: str, answer: str) -> str:
    return f"<Think>\n{trace}\n</Think>\n{answer}"


def example(record: dict, fmt: str, system: str | None = None, prompt_suffixes: bool = True) -> dict:
    if record["outcome"] == "sequential":
        trace = record["source_trace"].strip()
        fmt = "sequential" if fmt == "multiverse" else fmt
    else:
        trace = record["multiverse_trace"] if fmt == "multiverse" else strip_structure(record["multiverse_trace"])
    suffix = (PARALLEL_SUFFIX if fmt == "multiverse" else SEQUENTIAL_SUFFIX) if prompt_suffixes else ""
    prompt = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": record["question"] + suffix}]
    return {"id": record["id"], "format": fmt, "answer": record["answer"], "prompt": prompt,
            "completion": [{"role": "assistant", "content": completion_text(trace, record["answer"])}]}


def curriculum(records: list, mix: float, seed: int = 0, system: str | None = None,
               prompt_suffixes: bool = True) -> list[dict]:
    """``round(mix * N)`` autoregressive examples (a seeded choice of the N Multiverse records) first, then
    every record in input order (the sequential ones are autoregressive already).

    The order is the curriculum, so train it without shuffling (e.g. a sequential sampler); with
    shuffling it is a plain mix at that ratio.
    """
    check_mix(mix)
    parallel = [r for r in records if r["outcome"] == "ok"]
    chosen = random.Random(seed).sample(parallel, round(mix * len(parallel)))
    return ([example(r, "autoregressive", system, prompt_suffixes) for r in chosen]
            + [example(r, "multiverse", system, prompt_suffixes) for r in records])


def build_dataset(records, mix: float | None = None, seed: int = 0, system: str | None = None,
                  prompt_suffixes: bool = True):
    """A ``DatasetDict`` from ok and sequential records in input order. Traces are re-validated: a checkpoint
    edited by hand or written by an older version cannot slip a malformed example into training."""
    import datasets

    ok = sorted((r for r in records if r["outcome"] in KEPT), key=lambda r: r["index"])
    for r in ok:
        problems = validate_trace(r["multiverse_trace"]) if r["outcome"] == "ok" else [
            m.group() for m in [TAG_PATTERN.search(r["source_trace"])] if m]
        if problems:
            raise ValueError(f"record {r['id']} (input row {r['index']}) has an invalid trace: {problems[0]}")
    if not ok:
        raise ValueError("no finished ok or sequential examples to build a dataset from")
    train = (curriculum(ok, mix, seed, system, prompt_suffixes) if mix is not None
             else [example(r, "multiverse", system, prompt_suffixes) for r in ok])
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_list(train),
        "autoregressive": datasets.Dataset.from_list([example(r, "autoregressive", system, prompt_suffixes)
                                                      for r in ok]),
    })
