"""Benchmarks: local JSONL / JSON / Parquet / CSV files, or a ``datasets`` id when the Hub is reachable.

A row holds the problem under ``problem`` (or ``question`` / ``prompt`` / ``Question``), the reference answer
under ``answer`` (or ``solution`` / ``expected_answer``) and an optional ``id``. Multiple-choice rows (GPQA
style) give ``choices`` (a list) and the answer as its letter or its text, or GPQA's own columns
(``Correct Answer``, ``Incorrect Answer 1..3``), whose order is shuffled with a seed taken from the row.
The short names ``aime24``, ``aime25``, ``math500`` and ``gpqa-diamond`` stand for the datasets below.
"""

import random
import string
from dataclasses import dataclass
from pathlib import Path

from ..jsonl import iter_jsonl
from .grading import parse_gold

PROBLEM_KEYS = ("problem", "question", "prompt", "Question")
ANSWER_KEYS = ("answer", "solution", "expected_answer")
GPQA_KEYS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
# name: (datasets id, config, split). The ids most evaluations of reasoning models use.
HUB_BENCHMARKS = {
    "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "aime25": ("math-ai/aime25", None, "test"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "gpqa-diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train"),
}
DATASETS_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json"}


@dataclass
class Problem:
    id: str
    problem: str  # the question, with the lettered choices when it has any
    answer: str  # the reference answer; the letter for multiple choice
    choices: list | None = None


def load_benchmark(source: str | Path, limit: int | None = None) -> list[Problem]:
    """The problems of a local file, a short name (``aime24``...) or a ``datasets`` id; checked up front."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: give a positive number of problems, or no limit")
    path = Path(source)
    name = str(source)
    if path.suffix in (".jsonl", *DATASETS_FORMATS) or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"benchmark file {path} does not exist")
        rows = ((f"{path}:{n}", row) for n, row in iter_jsonl(path)) if path.suffix == ".jsonl" else \
            ((f"{path}:row {n}", row) for n, row in enumerate(_datasets_file(path), 1))
    else:
        rows = ((f"{name}:row {n}", row) for n, row in enumerate(_hub_dataset(name), 1))
    problems, seen = [], {}
    for where, row in rows:
        problem = problem_from_row(row, where, default_id=where.rsplit(":", 1)[1].removeprefix("row "))
        if problem.id in seen:  # records are keyed by id: a repeated one would be skipped as already done
            raise ValueError(f"{where}: id {problem.id!r} repeats the one of {seen[problem.id]}; ids must be unique")
        seen[problem.id] = where
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{source} holds no problems")
    return problems


def problem_from_row(row: dict, where: str, default_id: str) -> Problem:
    question = next((row[k] for k in PROBLEM_KEYS if k in row), None)
    answer = next((row[k] for k in ANSWER_KEYS if row.get(k) is not None), None)
    rid = str(row.get("id", row.get("unique_id", row.get("Record ID", default_id))))
    choices = row.get("choices")
    if choices is None and all(k in row for k in GPQA_KEYS):
        choices = [row[k] for k in GPQA_KEYS]
        random.Random(rid).shuffle(choices)  # seeded by the row: the same letters on every run
        answer = row["Correct Answer"]
    if not isinstance(question, str) or answer is None:
        raise ValueError(f"{where}: needs a text field {' / '.join(PROBLEM_KEYS)} and a field "
                         f"{' / '.join(ANSWER_KEYS)}; found {sorted(row)}")
    if choices is not None:
        return _choice_problem(rid, question, str(answer).strip(), choices, where)
    item = Problem(rid, question, str(answer))
    if not parse_gold(item.answer):
        # Caught here, before any generation, instead of silently grading every answer as wrong.
        raise ValueError(f"{where}: math-verify cannot read the reference answer {item.answer!r}")
    return item


def _choice_problem(rid, question, answer, choices, where) -> Problem:
    if not isinstance(choices, list) or not 2 <= len(choices) <= 10:
        raise ValueError(f"{where}: choices must be a list of 2 to 10 options, got {choices!r}")
    letters = string.ascii_uppercase[:len(choices)]
    texts = [str(c).strip() for c in choices]
    letter = answer.upper() if len(answer) == 1 and answer.upper() in letters else \
        letters[texts.index(answer)] if answer in texts else None
    if letter is None:
        raise ValueError(f"{where}: the answer {answer!r} is neither a letter {letters[0]}-{letters[-1]} "
                         "nor one of the choices")
    lines = "\n".join(f"{ch}) {text}" for ch, text in zip(letters, texts))
    return Problem(rid, f"{question.strip()}\n\n{lines}", letter, texts)


def _datasets_file(path: Path):
    import datasets

    kind = DATASETS_FORMATS.get(path.suffix)
    if kind is None:
        raise ValueError(f"{path}: give a .jsonl, .json, .parquet or .csv benchmark file")
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def _hub_dataset(name: str):
    """A benchmark from the Hub; offline or unreachable, one error naming the file to pass instead."""
    import datasets
    from huggingface_hub import constants

    repo, config, split = HUB_BENCHMARKS.get(name, (name, None, "test"))
    hint = (f"download {repo} and pass the file instead: --benchmark {name.replace('/', '_')}.jsonl (one JSON "
            "object per line with problem and answer) or a .parquet file")
    if constants.is_offline_mode():
        raise ValueError(f"benchmark {name!r} is not a local file and the Hub is offline (HF_HUB_OFFLINE); {hint}")
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as err:  # datasets raises many kinds (connection, gated, missing split): all one answer here
        raise ValueError(f"cannot load benchmark {name!r} ({repo}) from the Hub: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; {hint}") from None
