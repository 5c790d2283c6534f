"""Benchmarks as JSONL files, and math grading with math-verify.

A line is a JSON object with the problem under ``problem`` (or ``question``/``prompt``), the reference
answer under ``answer`` (or ``solution``/``expected_answer``) and an optional ``id``.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from math_verify import parse, verify

from ..modeling_multiverse.tags import TAG_PATTERN

PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "solution", "expected_answer")


@dataclass
class Problem:
    id: str
    problem: str
    answer: str


@dataclass
class Grade:
    correct: bool
    predicted: str | None  # what math-verify read from the answer region, None if nothing


def load_benchmark(path: str | Path, limit: int | None = None) -> list[Problem]:
    """The problems of a JSONL file; each reference answer must be readable by math-verify."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    problems = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not a JSON object ({err})") from None
        problem = next((row[k] for k in PROBLEM_KEYS if k in row), None) if isinstance(row, dict) else None
        answer = next((row[k] for k in ANSWER_KEYS if k in row), None) if isinstance(row, dict) else None
        if not isinstance(problem, str) or answer is None:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}:{lineno}: needs a text field {' / '.join(PROBLEM_KEYS)} and a field "
                             f"{' / '.join(ANSWER_KEYS)}; found {keys}")
        item = Problem(str(row.get("id", lineno)), problem, str(answer))
        if not parse_gold(item.answer):
            # Caught here, before any generation, instead of silently grading every answer as wrong.
            raise ValueError(f"{path}:{lineno}: math-verify cannot read the reference answer {item.answer!r}")
        problems.append(item)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path} holds no problems")
    return problems


def parse_gold(answer: str) -> list:
    # A bare reference like 1/2 or \frac{1}{2} is LaTeX math; math-verify reads it best between dollars.
    text = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    return parse(text) or parse(answer)


def answer_region(completion: str) -> str:
    """The text the user reads: what follows ``</Think>``; everything for a model that does not think in tags.

    A ``<Think>`` that the budget cut before ``</Think>`` gave no answer: grading the last number of an
    unfinished thought would reward truncation by chance. Tags become newlines so that ``<Conclusion>`` or
    a path label never reads as part of a number.
    """
    head, sep, tail = completion.rpartition("</Think>")
    if sep:
        region = tail
    else:
        region = "" if "<Think>" in completion else completion
    return TAG_PATTERN.sub("\n", region)


def grade(completion: str, answer: str) -> Grade:
    """math-verify's judgement of ``completion`` against the reference ``answer``."""
    gold = parse_gold(answer)
    predicted = parse(answer_region(completion))
    if not predicted:
        return Grade(False, None)
    return Grade(bool(verify(gold, predicted)), str(predicted[-1]))
