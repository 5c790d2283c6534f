"""Parse text or token ids into a tree of blocks, goals, outlines, paths and conclusions.

Two modes over one grammar (``structure.Stream``):
- tolerant (default), for model output: never raises; every repair is recorded with its index;
- strict, for training data: raises ``StructureError`` naming the broken rule and where.

The parser also records the *runs* of the layout: each maximal span of units (tokens or chars) that
belongs to one stream and takes consecutive positions, with the position id of its first unit (a run
splits where the position rule jumps, ``Stream.place``). ``layout.py`` turns runs into tensors.
"""

import gc
import re
from dataclasses import dataclass

import numpy as np

from .structure import CLOSE, FORK, OK, POP, POSITION_RULES, REFERENCE, Stream, repair, truncations
from .tags import CODE_OF_TAG, END_CONCLUSION, END_OUTLINE, LABEL_PATTERN, OUTLINE, PARALLEL, PATH, TAG_PATTERN

VOID_SID, ROOT_SID = 0, 1  # segment 0 holds padding and scratch rows; it sees only itself
# What a label may look like before its ":" is read: the window it is read from grows while this holds, so a
# label as long as nesting makes it ("1.2.1.1...") is read whole.
_LABEL_SO_FAR = re.compile(r"\s*[0-9.]*\s*")


class StructureError(ValueError):
    """A strict-mode violation: ``rule`` names the broken rule, ``index`` is where (in ``units``)."""

    def __init__(self, rule: str, index: int, units: str, message: str):
        self.rule, self.index, self.units = rule, index, units
        unit = "token" if units == "tokens" else "char"
        super().__init__(f"[{rule}] at {unit} {index}: {message}")


@dataclass(slots=True)
class Repair:
    rule: str
    index: int
    message: str

    def __str__(self):
        return f"{self.rule}@{self.index}: {self.message}"


@dataclass(slots=True)
class ParseResult:
    """The tree is the grammar's own records: ``structure.Block`` per block, ``structure.Stream`` per path (with
    its spans), the root stream holding the top-level blocks."""

    units: str  # "tokens" or "chars"
    length: int
    blocks: list  # top-level blocks
    all_blocks: list  # every block, in order of appearance
    repairs: list
    runs: list  # (start, end, sid, start_pos)
    streams: list  # Stream per sid; streams[0] is the void segment

    @property
    def fork_children(self) -> dict:
        """sid -> [[child sid, ...] per fork of that stream, in order]."""
        return fork_children(self.streams)

    @property
    def ok(self) -> bool:
        return not self.repairs

    @property
    def critical_path(self) -> int:
        """Decode steps: the length when only the longest path of each block is counted (the streams' step
        clock, ``Stream.next_step``; not the largest position, which the reference rule makes smaller)."""
        return max((s.next_step for s in self.streams), default=0)

    @property
    def ideal_parallelism(self) -> float:
        return self.length / self.critical_path if self.critical_path else 1.0

    @property
    def max_depth(self) -> int:
        return max((b.depth for b in self.all_blocks), default=0)


def fork_children(streams: list) -> dict:
    """sid -> [[child sid, ...] per forked block of that stream, in order], read from the block records."""
    return {s.sid: forks for s in streams if (forks := [[p.sid for p in b.paths] for b in s.blocks if b.paths])}


def _text_items(text: str):
    pos = 0
    for m in TAG_PATTERN.finditer(text):
        if m.start() > pos:
            yield None, pos, m.start()
        yield CODE_OF_TAG[m.group()], m.start(), m.end()
        pos = m.end()
    if pos < len(text):
        yield None, pos, len(text)


def _id_items(ids, tag_ids):
    arr = np.asarray(ids, dtype=np.int64)
    code_of = {int(t): c for c, t in enumerate(tag_ids)}
    pos = 0
    for i in np.flatnonzero(np.isin(arr, np.asarray(tag_ids, dtype=np.int64))).tolist():
        if i > pos:
            yield None, pos, i
        yield code_of[int(arr[i])], i, i + 1
        pos = i + 1
    if pos < len(arr):
        yield None, pos, len(arr)


class IncrementalParser:
    def __init__(self, strict: bool, allow_truncated: bool, units: str, text_of, position_rule: str = REFERENCE):
        if position_rule not in POSITION_RULES:
            raise ValueError(f"position_rule={position_rule!r}: must be one of {POSITION_RULES} "
                             "(config.multiverse_position_rule)")
        self.strict, self.allow_truncated, self.units, self.text_of = strict, allow_truncated, units, text_of
        self.repairs, self.runs, self.all_blocks = [], [], []
        self.streams = [Stream(sid=VOID_SID), Stream(sid=ROOT_SID, position_rule=position_rule)]
        self.cur = self.streams[ROOT_SID]

    @property
    def blocks(self) -> list:
        """The top-level blocks (the root stream's)."""
        return self.streams[ROOT_SID].blocks

    @property
    def fork_children(self) -> dict:
        return fork_children(self.streams)

    def fail(self, rule: str, index: int, message: str):
        if self.strict:
            raise StructureError(rule, index, self.units, message)
        self.repairs.append(Repair(rule, index, message))

    def advance(self, stream: Stream, code, start: int, end: int):
        """Place units [start, end) of ``stream`` (``Stream.place``) and extend or open a run."""
        pos = stream.place(code, end - start)
        run = self.runs[-1] if self.runs else None
        if run is not None and run[2] == stream.sid and run[1] == start and run[3] + (start - run[0]) == pos:
            run[1] = end
        else:
            self.runs.append([start, end, stream.sid, pos])

    def label(self, start: int, end: int) -> str:
        """The "1.2" of "1.2: ...", read from a window that grows while it could still be a label (labels
        get longer with nesting; a fixed window misread them past ~30 levels)."""
        if self.text_of is None or end <= start:
            return ""
        width = 64
        while True:
            text = self.text_of(start, min(end, start + width))
            m = LABEL_PATTERN.match(text)
            if m:
                return m.group(1)
            if start + width >= end or not _LABEL_SO_FAR.fullmatch(text):
                return ""
            width *= 4

    def run(self, items, length: int):
        for code, start, end in items:
            self.feed(code, start, end)
        self.finish(length)

    def feed_ids(self, ids, tag_ids, offset: int = 0):
        """The public incremental entry point: read token ``ids`` that continue the input at unit ``offset``."""
        for code, start, end in _id_items(ids, tag_ids):
            self.feed(code, start + offset, end + offset)

    def result(self, length: int) -> "ParseResult":
        """What was read so far, as ``parse`` returns it (``finish`` is not applied: a prefix is no repair)."""
        return ParseResult(self.units, length, self.blocks, self.all_blocks, self.repairs,
                           [tuple(r) for r in self.runs], self.streams)

    def feed(self, code, start: int, end: int):
        """Read one item: text (``code`` None) or the tag ``code`` spanning units [start, end)."""
        cur = self.cur
        if code is None:
            if self.text_of is not None and not cur.text_allowed():
                text = self.text_of(start, end)
                if text.strip():
                    where = cur.top.phase if cur.top else "before the branch's <Path>"
                    at = start + (len(text) - len(text.lstrip()) if self.units == "chars" else 0)
                    self.fail("text-between-tags", at, f"text {text.strip()[:40]!r} in a block's {where}")
            self.advance(cur, None, start, end)
            return
        frame = cur.top
        self.advance(cur, code, start, end)  # placed before step: the rule reads the state the tag arrives in
        event, reason = cur.step(code, start)
        broken = repair(event, cur, reason)
        if broken is not None:
            self.fail(broken[0], start, broken[1])
        if event == OK:
            self.on_tag(cur, code, start, end)
        elif event == FORK:
            self.open_child(cur, frame, end)
        elif event == CLOSE:
            self.close(cur, end)
        elif event == POP:
            frame.end = end

    def on_tag(self, cur: Stream, code: int, start: int, end: int):
        """The spans the grammar does not keep (it sees a tag's first unit only)."""
        top = cur.top
        if code == PARALLEL:
            self.all_blocks.append(top)
        elif code == END_OUTLINE:
            outline = top.outlines[-1]
            outline.end = end
            outline.label = self.label(outline.start + self._tag_len(OUTLINE), start)
        elif code == PATH and cur.is_branch and top is None:
            cur.tag_end = end
        elif code == END_CONCLUSION:
            top.conclusion = (top.conclusion[0], end)

    def _tag_len(self, code: int) -> int:
        return 1 if self.units == "tokens" else len(_TAG_TEXT[code])

    def open_child(self, parent: Stream, block, start: int):
        k = len(block.paths)
        child = parent.spawn(block, len(self.streams), block.outlines[k].label or default_label(parent, k))
        child.start = start
        self.streams.append(child)
        self.cur = child

    def close(self, cur: Stream, end: int):
        cur.end = end
        if cur.tag_end >= 0 and self.text_of is not None:
            written = self.label(cur.tag_end, end)
            if written and written != cur.label:
                self.fail("path-label", cur.tag_end, f"path labelled {written!r} answers outline {cur.label!r}")
        parent = cur.parent
        frame = parent.top
        if len(frame.paths) < len(frame.outlines):
            self.open_child(parent, frame, end)
            return
        parent.merge(frame)
        self.cur = parent

    def finish(self, length: int):
        if self.allow_truncated:
            return
        for message in truncations(self.cur, lambda stream, block: block.start):
            self.fail("truncated", length, message)


_TAG_TEXT = {code: tag for tag, code in CODE_OF_TAG.items()}


def default_label(parent: Stream, k: int) -> str:
    """The label of path ``k`` when its outline has none: "2", or "1.2" inside path 1."""
    return f"{parent.label}.{k + 1}" if parent.is_branch and parent.label else str(k + 1)


def parse(source, tag_ids=None, *, strict: bool = False, allow_truncated: bool = False,
          decode=None, position_rule: str = REFERENCE) -> ParseResult:
    """Parse ``source`` (a ``str`` or a sequence of token ids) into a ``ParseResult``.

    Token ids need ``tag_ids`` (the 12 tag ids in ``TAGS`` order). ``decode`` (ids -> str) lets id
    parsing read outline labels and check text between tags. ``allow_truncated`` accepts an input
    that stops mid-structure (a prefix) without a repair or an error. ``position_rule`` is one of
    ``structure.POSITION_RULES`` (the model's ``config.multiverse_position_rule``).
    """
    if isinstance(source, str):
        units, items, length = "chars", _text_items(source), len(source)
        text_of = lambda s, e: source[s:e]  # noqa: E731
    else:
        if tag_ids is None:
            raise ValueError("parse() needs tag_ids to read token ids; pass config.multiverse_tag_ids")
        ids = source.tolist() if hasattr(source, "tolist") else list(source)
        units, items, length = "tokens", _id_items(ids, tag_ids), len(ids)
        text_of = (lambda s, e: decode(ids[s:e])) if decode is not None else None
    p = IncrementalParser(strict, allow_truncated, units, text_of, position_rule)
    # A parse keeps every object it makes until it returns, so the cyclic collector would only rescan a growing
    # heap: 60% of a 1 MB parse. It is paused for the parse and resumes as it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        p.run(items, length)
        return p.result(length)
    finally:
        if collecting:
            gc.enable()


def well_formed_prefix(source, tag_ids=None, decode=None) -> int:
    """Length of the longest prefix that breaks no strict rule (it may stop mid-structure)."""
    try:
        parse(source, tag_ids, strict=True, allow_truncated=True, decode=decode)
    except StructureError as err:
        return err.index
    return len(source)
