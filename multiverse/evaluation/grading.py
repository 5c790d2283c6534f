"""Grading: the answer is what follows ``</Think>``; math through math-verify, multiple choice by its letter.

A completion that opens ``<Think>`` and never closes it (cut by the budget) has no answer: grading the
last number of an unfinished thought would reward truncation by chance. ``unfinished="whole"`` grades the
whole text instead, for analyses that want it (``multiverse grade --grade-unfinished``).
"""

import re
from dataclasses import dataclass

from math_verify import parse, verify

from ..modeling_multiverse.tags import TAG_PATTERN

UNFINISHED = ("no-answer", "whole")
# "the answer is (B)", "Answer: B", "\boxed{B}", "**B**": the last one written is the answer.
CHOICE_PATTERN = re.compile(r"(?:answer\s*(?:is|:)?\s*(?:option\s*)?[\(\[*]*((?-i:[A-J]))\b[\)\]*]*"
                            r"|\\boxed\{\s*(?:\\text\{)?\s*((?-i:[A-J]))\s*\}?\s*\}|^\s*\(?((?-i:[A-J]))[\).]?\s*$)",
                            re.IGNORECASE | re.MULTILINE)


@dataclass
class Grade:
    correct: bool
    predicted: str | None  # what was read from the answer region, None if nothing


def answer_region(completion: str, unfinished: str = "no-answer") -> str:
    """The text the user reads: what follows the last ``</Think>``; everything for a model without tags.

    Tags become newlines so that ``<Conclusion>`` or a path label never reads as part of a number.
    """
    if unfinished not in UNFINISHED:
        raise ValueError(f"unfinished={unfinished!r}; choose from {UNFINISHED}")
    head, sep, tail = completion.rpartition("</Think>")
    if sep:
        region = tail
    else:
        region = "" if "<Think>" in completion and unfinished == "no-answer" else completion
    return TAG_PATTERN.sub("\n", region)


def parse_gold(answer: str) -> list:
    # A bare reference like 1/2 or \frac{1}{2} is LaTeX math; math-verify reads it best between dollars.
    text = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    return parse(text) or parse(answer)


def grade(completion: str, answer: str, unfinished: str = "no-answer") -> Grade:
    """math-verify's judgement of ``completion`` against the reference ``answer``."""
    gold = parse_gold(answer)
    predicted = parse(answer_region(completion, unfinished))
    if not predicted:
        return Grade(False, None)
    return Grade(bool(verify(gold, predicted)), str(predicted[-1]))


def grade_choice(completion: str, letter: str, unfinished: str = "no-answer") -> Grade:
    """A multiple-choice answer (GPQA style): the last letter the answer region commits to."""
    found = [next(g for g in m.groups() if g) for m in CHOICE_PATTERN.finditer(answer_region(completion, unfinished))]
    if not found:
        return Grade(False, None)
    return Grade(found[-1].upper() == letter.strip().upper(), found[-1].upper())


def grade_problem(completion: str, problem, unfinished: str = "no-answer") -> Grade:
    """Grade against a ``benchmark.Problem``: by letter when it has choices, else through math-verify."""
    if problem.choices:
        return grade_choice(completion, problem.answer, unfinished)
    return grade(completion, problem.answer, unfinished)
