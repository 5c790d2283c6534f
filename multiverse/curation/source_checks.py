"""Stage (e): the rewrite keeps the source. The final answer survives, and the content is preserved.

- ``answer_kept``: the final answer (``\\boxed{}`` content when there is one, else the answer text) is
  in the rewrite, as text or as an equivalent expression (math-verify). ``None`` when the source
  trace itself never states it, since a rewrite cannot be blamed for that.
- ``length_ratio``: characters of the rewrite, structure stripped, over characters of the source.
- ``overlap``: share of the source's words (as a multiset) that the rewrite still contains.
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass

from .validate import strip_structure

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"[\s$]+")
TAIL_CHARS = 2000  # the answer is stated at the end; parsing all of a long trace is slow and noisy


def _quiet_timeout_notice(record: logging.LogRecord) -> bool:
    # math-verify's timeouts use SIGALRM, which only works in the main thread; the checks run in worker
    # threads, so they are off on purpose and the notice that says so is noise.
    return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_quiet_timeout_notice)


@dataclass
class SourceBounds:
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0
    min_overlap: float = 0.5

    def __post_init__(self):
        if not 0 < self.min_length_ratio <= self.max_length_ratio:
            raise ValueError(f"need 0 < min_length_ratio ({self.min_length_ratio}) <= max_length_ratio "
                             f"({self.max_length_ratio})")
        if not 0 <= self.min_overlap <= 1:
            raise ValueError(f"min_overlap={self.min_overlap} must lie in [0, 1]")


def final_answer(answer: str) -> str:
    """The part of an answer text to look for: the last ``\\boxed{...}``, else the whole text."""
    from math_verify import parse as mv_parse

    if "\\boxed" in answer:
        parsed = mv_parse(answer, parsing_timeout=None)
        if len(parsed) > 1 and parsed[1]:
            return str(parsed[1])
    return answer.strip()


def _normal(text: str) -> str:
    return _SPACE.sub("", text).lower()


def states_answer(text: str, answer: str) -> bool:
    target = final_answer(answer)
    if not target:
        return False
    if _normal(target) in _normal(text):
        return True
    from math_verify import parse as mv_parse, verify

    gold = mv_parse(target if "\\boxed" in target else f"${target}$", parsing_timeout=None)
    pred = mv_parse(text[-TAIL_CHARS:], parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def word_overlap(source: str, rewrite: str) -> float:
    src = Counter(w.lower() for w in _WORD.findall(source))
    if not src:
        return 1.0
    got = Counter(w.lower() for w in _WORD.findall(rewrite))
    return sum((src & got).values()) / sum(src.values())


def source_checks(source: str, rewrite: str, answer: str, bounds: SourceBounds) -> tuple[dict, str | None]:
    """(measurements, failure reason or None). Measurements are recorded either way."""
    plain = strip_structure(rewrite)
    checks = {
        "answer_kept": (states_answer(rewrite, answer) if states_answer(source, answer) else None) if answer else None,
        "length_ratio": round(len(plain) / max(1, len(source)), 4),
        "overlap": round(word_overlap(source, plain), 4),
    }
    if checks["answer_kept"] is False:
        return checks, "answer-lost"
    if not bounds.min_length_ratio <= checks["length_ratio"] <= bounds.max_length_ratio:
        return checks, "length-ratio"
    if checks["overlap"] < bounds.min_overlap:
        return checks, "low-overlap"
    return checks, None
