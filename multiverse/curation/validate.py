"""Stage (c): validate a rewritten trace with the strict parser, and say which rule broke where.

The strict parser (``modeling_multiverse.parser``) is the grammar; this module only adds what training
data needs on top of it: at least one block, explicit ``i:`` labels numbered the way the engine seeds
paths, paths and conclusions that say something (an empty block put in front of the untouched source is
no parallel reasoning), and no ``<Think>`` inside the trace (the dataset builder wraps it).
"""

import bisect
import re
from dataclasses import dataclass

from ..modeling_multiverse.parser import StructureError, parse
from ..modeling_multiverse.tags import LABEL_PATTERN, TAG_PATTERN
from ..sequential_form import to_sequential_text

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n\s*```\s*$", re.S)


@dataclass
class Violation:
    rule: str
    index: int  # char offset in the canonical trace
    line: int
    column: int
    message: str
    excerpt: str  # the trace around ``index``, with ">>>" marking the spot

    def __str__(self):
        return f"[{self.rule}] line {self.line}, column {self.column}: {self.message}\n{self.excerpt}"


def violation(text: str, rule: str, index: int, message: str, context: int = 120) -> Violation:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    excerpt = text[max(0, index - context):index] + ">>>" + text[index:index + context]
    return Violation(rule, index, line, column, message, excerpt)


def extract_trace(answer: str) -> str:
    """The trace inside an LLM answer: without a code fence or a ``<Think>`` wrapper around it."""
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    if text.startswith("<Think>") and "</Think>" in text:
        text = text[len("<Think>"):text.rindex("</Think>")]
    return canonicalize(text)


def canonicalize(trace: str) -> str:
    """Every tag on its own line, as in the published data and the engine's forced seeds (DESIGN 2).

    Whitespace next to a tag is all the grammar ignores, so only that is rewritten.
    """
    parts, pos = [], 0
    for m in TAG_PATTERN.finditer(trace):
        chunk = trace[pos:m.start()].strip()
        if chunk:
            parts.append(chunk)
        parts.append(m.group())
        pos = m.end()
    if trace[pos:].strip():
        parts.append(trace[pos:].strip())
    return "\n".join(parts)


def validate_trace(trace: str) -> list[Violation]:
    """Everything wrong with ``trace`` as Multiverse training text; empty when it is valid.

    The strict parser stops at the first grammar error, so at most one grammar violation is reported;
    label problems are only checked once the grammar holds.
    """
    for m in TAG_PATTERN.finditer(trace):
        if m.group() in ("<Think>", "</Think>"):
            return [violation(trace, "think-tag", m.start(),
                              f"{m.group()} inside the trace; the dataset adds the <Think> wrapper itself")]
    try:
        result = parse(trace, strict=True)
    except StructureError as err:
        return [violation(trace, err.rule, err.index, str(err).split(": ", 1)[1])]
    if not result.all_blocks:
        return [violation(trace, "no-block", 0, "the trace has no <Parallel> block")]
    return _label_violations(trace, result) or _empty_parts(trace, result)


def _label_violations(trace: str, result) -> list[Violation]:
    out = []
    parent_label = {}
    for block in result.all_blocks:
        for path in block.paths:
            for inner in path.blocks:
                parent_label[id(inner)] = path.label
    for block in result.all_blocks:
        prefix = parent_label.get(id(block))
        for k, outline in enumerate(block.outlines):
            expected = f"{prefix}.{k + 1}" if prefix else str(k + 1)
            if outline.label != expected:
                body_start = outline.start + len("<Outline>")
                found = f"label {outline.label!r}" if outline.label else "no 'i:' label"
                out.append(violation(trace, "outline-label", body_start,
                                     f"outline {k + 1} of this block must start with '{expected}:', found {found}"))
        for k, path in enumerate(block.paths):
            m = LABEL_PATTERN.match(trace, path.tag_end) if path.tag_end >= 0 else None
            if m is None:
                out.append(violation(trace, "path-label", max(path.tag_end, path.start),
                                     f"path {k + 1} must start with its outline's label '{path.label}:'"))
    return out


def _empty_parts(trace: str, result) -> list[Violation]:
    """Paths with nothing after their label, and empty conclusions: the parallel work must be real."""
    out = []
    for block in result.all_blocks:
        for k, path in enumerate(block.paths):
            m = LABEL_PATTERN.match(trace, path.tag_end)
            body = trace[m.end() if m else path.tag_end:path.end].replace("</Path>", "")
            if not body.strip():
                out.append(violation(trace, "empty-path", path.tag_end,
                                     f"path {k + 1} has no content after its label; each path must do its step"))
        if block.conclusion is not None:
            start, end = block.conclusion
            if not trace[start:end].replace("<Conclusion>", "").replace("</Conclusion>", "").strip():
                out.append(violation(trace, "empty-conclusion", start,
                                     "the conclusion is empty; it must combine the paths' results"))
    return out


def strip_structure(trace: str) -> str:
    """The same reasoning as plain sequential text (``multiverse.sequential_form``), for a valid trace."""
    return to_sequential_text(trace).strip()


def check_blocks(text: str) -> list[dict]:
    """Strictly validate every block of (untrusted) model output.

    One tolerant parse serves every block (it was a strict parse per block, which read a nested block's text again
    at each level of nesting: quadratic in the depth). A block is *complete* when the parse closed it and
    recorded no repair inside it; otherwise its strict verdict is the first rule the parse had to repair in it,
    which is where a strict parse stops. Returns, per block in order: its span, whether it is complete, and the
    verdict (``rule`` None when accepted, else the rule and the absolute index where it broke).
    """
    result = parse(text)
    at = [r.index for r in result.repairs]  # in sequence order, as the parse met them
    if at != sorted(at):
        order = sorted(range(len(at)), key=at.__getitem__)
        repairs, at = [result.repairs[i] for i in order], sorted(at)
    else:
        repairs = result.repairs
    rows = []
    for block in result.all_blocks:
        end = block.end if block.end >= 0 else len(text)
        first = bisect.bisect_left(at, block.start)
        complete = block.closed and not (first < len(at) and at[first] < end)
        broken = None if complete or first == len(at) or at[first] > end else repairs[first]
        rows.append(dict(start=block.start, end=end, depth=block.depth, complete=complete,
                         rule=None if broken is None else broken.rule, index=None if broken is None else broken.index,
                         message="" if broken is None else f"[{broken.rule}] at char {broken.index}: {broken.message}"))
    return rows
