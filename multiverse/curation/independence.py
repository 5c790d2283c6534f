"""Flag paths that lean on a sibling path's result.

Sibling paths are decoded at the same time and cannot see each other, so a path that says "from path
2" or uses a number only a sibling derives will be trained to guess. Two heuristics, both cheap:

- *mention*: the path names a sibling ("path 2", "outline 3", "the other path", "previous path").
- *value*: the path uses a number (2+ significant characters) as an input, never derives it itself
  (no ``= x`` / ``is x``), while a sibling derives it, and it appears nowhere the path can see
  (the question, the text before the block, the goal).

They are flags for a human or a filter (``--drop-dependent``), not proof.
"""

import re

from ..modeling_multiverse.parser import parse

_MENTION = re.compile(r"\b(?:path|branch|outline|subtask|sub-task|step)\s*#?\s*([0-9]+(?:\.[0-9]+)*)\b", re.I)
_VAGUE = re.compile(r"\b(?:other|previous|sibling|preceding|parallel|first|second|third|above)\s+"
                    r"(?:path|branch|subtask|sub-task)s?\b", re.I)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[./]\d+)?(?![\w])")
_DERIVED = re.compile(r"(?:=|\bis|\bequals|\bgives|\bget)\s*\$?\s*(-?\d+(?:[./]\d+)?)(?![\w])", re.I)


def _significant(number: str) -> bool:
    return len(number.lstrip("-").replace(".", "").replace("/", "")) >= 2


def check_independence(trace: str, question: str = "") -> list[dict]:
    """One flag per (path, finding): block index, path label, kind ("mention"/"value") and evidence."""
    result = parse(trace)
    flags = []
    for b, block in enumerate(result.all_blocks):
        if block.goal_end < 0:
            continue
        visible = question + "\n" + trace[:block.goal_end]
        bodies = {p.label: trace[p.tag_end:p.end] for p in block.paths if p.tag_end >= 0 and p.end >= 0}
        derived = {label: set(_DERIVED.findall(body)) for label, body in bodies.items()}
        visible_numbers = set(_NUMBER.findall(visible))
        for label, body in bodies.items():
            siblings = [s for s in bodies if s != label]
            text = body.split(":", 1)[1] if ":" in body[:24] else body  # skip the path's own label
            for m in _MENTION.finditer(text):
                if m.group(1) in siblings:
                    flags.append(dict(block=b, path=label, kind="mention", evidence=_around(text, m)))
            for m in _VAGUE.finditer(text):
                flags.append(dict(block=b, path=label, kind="mention", evidence=_around(text, m)))
            used = {n for n in _NUMBER.findall(text) if _significant(n)}
            for number in sorted(used - derived[label] - visible_numbers):
                source = [s for s in siblings if number in derived[s]]
                if source:
                    flags.append(dict(block=b, path=label, kind="value",
                                      evidence=f"uses {number}, which only path {source[0]} derives"))
    return flags


def _around(text: str, m, width: int = 40) -> str:
    return text[max(0, m.start() - width):m.end() + width].replace("\n", " ").strip()
