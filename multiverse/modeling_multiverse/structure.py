"""The one grammar of the format, as a state machine over a single stream of tags.

A *stream* is a run of decoding in one branch context: the root (prompt and main answer) or one
``<Path>``. The parser walks streams in linear (training) order, the engine walks them all at once,
and the structure logits processor asks them what may come next. All three call ``Stream.step``,
so a sequence the engine produced is read back by the parser exactly as the engine saw it.

Rules (tolerant reading; the strict parser raises on every event marked stray or repair):
- ``<Parallel>`` opens a block where no block of this stream is open; ``<Goal>`` must follow.
- Inside a goal only ``<Outline>``/``</Outline>`` are tags; ``</Goal>`` with outlines *forks* one
  branch per outline. ``</Goal>`` with no outline continues sequentially (event ``empty_goal``).
- A branch starts with its separator and ``<Path>`` and ends at ``</Path>``, whatever is still open
  inside it (event ``abandoned_block``). When all branches closed, the parent is *merged* and its
  next tokens are ``<Conclusion> ... </Conclusion> </Parallel>``.
- Every other tag is *stray*: it stays in the text and changes nothing.

Positions (``Stream.place``, the one place the rule lives) follow ``POSITION_RULES``.
"""

import copy
from dataclasses import dataclass, field

from .tags import (
    CONCLUSION, END_CONCLUSION, END_GOAL, END_OUTLINE, END_PARALLEL, END_PATH, END_THINK, GOAL, OUTLINE,
    PARALLEL, PATH, TAGS, THINK,
)

# Block phases, in the order a well-formed block passes through them.
EXPECT_GOAL, GOAL_OPEN, IN_OUTLINE, FORKED, MERGED, IN_CONCLUSION, CONCLUDED = (
    "expect_goal", "goal", "outline", "forked", "merged", "conclusion", "concluded")
# Phases where the strict grammar allows only whitespace text.
NO_TEXT_PHASES = {EXPECT_GOAL, GOAL_OPEN, MERGED, CONCLUDED}

# How position ids are laid out; recorded in ``MultiverseConfig.multiverse_position_rule``.
# - "reference": the rule the published checkpoints were trained with (the reference training code).
#   Positions run 0, 1, 2, ... and jump at two named tags, counting on from there: a block's every
#   ``<Path>`` tag gets g + 1 (g = pos(</Goal>)), its ``<Conclusion>`` tag g + L + 1, where L is the
#   largest pos(</Path>) - g over its paths. Nested blocks apply it in sequence order.
# - "branch-start": the rule of models trained with this project before it followed the reference: each
#   branch starts at g + 1 *with its separator*, so ``<Path>`` is one later, and the conclusion's separator
#   starts at g + L + 1. Kept so that such a model keeps the positions it was trained on.
REFERENCE, BRANCH_START = "reference", "branch-start"
POSITION_RULES = (REFERENCE, BRANCH_START)

# Events returned by Stream.step.
OK, STRAY, FORK, CLOSE, EMPTY_GOAL, POP = "ok", "stray", "fork", "close", "empty_goal", "pop"


@dataclass(slots=True)
class Outline:
    start: int  # unit index of <Outline>
    end: int = -1  # unit after </Outline>
    label: str = ""


@dataclass(slots=True)
class Block:
    """A block: the one record of it. The grammar keeps its phase and positions while it is open (a stream's
    ``frames``); the parser fills in its spans (unit indices); the parser's tree, the layout and the engine's
    branches all read this object."""

    start: int  # unit index of <Parallel>
    depth: int = 1  # 1 for a top-level block
    phase: str = EXPECT_GOAL
    outlines: list = field(default_factory=list)  # Outline per <Outline> of its goal
    goal_end: int = -1  # unit index of </Goal>
    goal_end_pos: int = -1  # position id of </Goal>
    goal_end_step: int = -1  # decode step of </Goal> (the step clock, see Stream)
    conclusion_pos: int = -1  # position id of <Conclusion> once merged: pos(</Goal>) + L + 1
    # Left out of repr: a stream's repr would otherwise walk the whole tree below it, recursing with the depth.
    paths: list = field(default_factory=list, repr=False)  # its branch Streams, in path order
    conclusion: tuple | None = None  # (unit of <Conclusion>, unit after </Conclusion>), -1 while open
    end: int = -1  # unit after </Parallel>; -1 while open
    closed: bool = False  # closed by </Parallel> after a complete conclusion


@dataclass(slots=True, eq=False)  # identity: a branch context, compared (and hashed) as itself, never field by field
class Stream:
    """One branch context. ``address`` is ((block_uid, path_index), ...) from the root down."""

    sid: int
    address: tuple = ()
    parent: "Stream | None" = field(default=None, repr=False)  # repr and eq would recurse up the chain
    label: str = ""
    start_pos: int = 0
    next_pos: int = 0
    opened: bool = False  # a branch has seen its <Path>
    closed: bool = False
    frames: list = field(default_factory=list)
    position_rule: str = REFERENCE
    # The step clock: decode steps, which is what "branch-start" positions were. A branch starts one step after
    # its </Goal>, the conclusion one step after the longest branch. It measures the critical path and the
    # path budget whatever the position rule.
    start_step: int = 0
    next_step: int = 0
    # sid of the first path of this branch's block: the streams opened after it and before this one are this
    # branch's earlier siblings and their subtrees (in the parser's order and the engine's alike).
    siblings_from: int = -1
    block: "Block | None" = field(default=None, repr=False)  # the block this branch is a path of
    blocks: list = field(default_factory=list, repr=False)  # the blocks opened in this stream, in order
    # Spans, in the parser's unit indices (the engine's streams leave them at -1: it linearizes at the end).
    start: int = -1  # first unit of the branch: its separator, before <Path>
    tag_end: int = -1  # unit after its <Path>
    end: int = -1  # unit after its </Path>

    @property
    def is_branch(self) -> bool:
        return self.parent is not None

    @property
    def depth(self) -> int:
        return len(self.address)

    @property
    def top(self):
        return self.frames[-1] if self.frames else None

    @property
    def extent(self) -> int:
        """Decode steps this branch has taken (its tokens, a nested block counted by its longest path): its share
        of the critical path. Steps, not positions: under the reference rule a separator shares its <Path>'s."""
        return self.next_step - self.start_step

    def place(self, code: int | None, n: int = 1) -> int:
        """Position of the next ``n`` units, text (``code`` None) or the tag ``code``, before ``step`` reads it.

        The one place the position rule lives: the parser (hence the layout and the collator) and the engine
        both place every unit through it. Returns the position of the first unit; the next ``n - 1`` follow.
        """
        self.next_step += n
        if code is None:  # text never jumps (the hot path: most units are text)
            pos = self.next_pos
            self.next_pos += n
            return pos
        top = self.frames[-1] if self.frames else None
        if self.position_rule == REFERENCE:
            if code == PATH and self.parent is not None and not self.opened:
                # A branch's <Path> tag gets g + 1. What came before it in the branch (the separator, normally
                # one "\n") counted on from g + 1 as well: for path 1 that is the reference's own rule; for
                # paths 2..n the reference puts the separator after the previous path's </Path>, which no
                # parallel decoder can know, so it gets its own <Path>'s position. The only token that differs.
                self.next_pos = self.start_pos
            elif code == CONCLUSION and top is not None and top.phase == MERGED:
                self.next_pos = top.conclusion_pos  # g + L + 1; its separator followed the last path
        if code == END_GOAL and top is not None and top.phase == GOAL_OPEN:
            top.goal_end_pos, top.goal_end_step = self.next_pos + n - 1, self.next_step - 1  # its last unit
        pos = self.next_pos
        self.next_pos += n
        return pos

    def text_allowed(self) -> bool:
        """Whether non-whitespace text is legal here under the strict grammar."""
        if self.is_branch and not self.opened:
            return False
        return self.top is None or self.top.phase not in NO_TEXT_PHASES

    def step(self, code: int, index: int) -> tuple[str, str]:
        """Apply tag ``code`` seen at unit ``index``. Returns (event, reason for stray/repair)."""
        top = self.top
        if self.is_branch and not self.opened:
            if code == PATH:
                self.opened = True
                return OK, ""
            if code == END_PATH:
                self.closed = True
                return CLOSE, "branch closed before its <Path>"
            return STRAY, f"{TAGS[code]} before the branch's <Path>"
        if code == PARALLEL:
            if top is None:
                block = Block(start=index, depth=self.depth + 1)
                self.frames.append(block)
                self.blocks.append(block)
                return OK, ""
            return STRAY, f"<Parallel> inside an open block's {top.phase}"
        if code == END_PATH:
            if self.is_branch:
                self.closed = True
                return CLOSE, ("path closed with an open block inside" if self.frames else "")
            return STRAY, "</Path> outside any path"
        if top is None:
            if code in (THINK, END_THINK) and not self.is_branch:
                return OK, ""
            return STRAY, f"{TAGS[code]} {'inside a path' if self.is_branch else 'outside a block'}"
        phase = top.phase
        if code == GOAL and phase == EXPECT_GOAL:
            top.phase = GOAL_OPEN
        elif code == OUTLINE and phase == GOAL_OPEN:
            top.phase = IN_OUTLINE
            top.outlines.append(Outline(start=index))
        elif code == END_OUTLINE and phase == IN_OUTLINE:
            top.phase = GOAL_OPEN
        elif code == END_GOAL and phase == GOAL_OPEN:
            top.goal_end = index
            if top.outlines:
                top.phase = FORKED
                return FORK, ""
            top.phase = CONCLUDED
            return EMPTY_GOAL, "</Goal> with no outline: continued sequentially"
        elif code == CONCLUSION and phase == MERGED:
            top.phase = IN_CONCLUSION
            top.conclusion = (index, -1)
        elif code == END_CONCLUSION and phase == IN_CONCLUSION:
            top.phase = CONCLUDED
        elif code == END_PARALLEL and phase in (CONCLUDED, MERGED, IN_CONCLUSION):
            self.frames.pop()
            if phase != CONCLUDED:
                return POP, "block closed without a complete <Conclusion>"
            top.closed = True
            return POP, ""
        else:
            return STRAY, f"{TAGS[code]} in a block's {phase}"
        return OK, ""

    def twin(self, sid: int) -> "Stream":
        """This stream's grammar state under ``sid``, to go on apart from it: a sample continuing the prompt, or a
        trial step (``budget_cuts``). Closed blocks are shared, as nothing changes them; open ones are copied.
        Shallow: the blocks and paths behind it are not walked (a prompt may nest hundreds of blocks deep)."""
        twin = copy.copy(self)
        twin.sid = sid
        opened = {}
        for frame in self.frames:
            opened[id(frame)] = copy.copy(frame)
            opened[id(frame)].outlines = [copy.copy(o) for o in frame.outlines]
            opened[id(frame)].paths = list(frame.paths)
        twin.frames = [opened[id(f)] for f in self.frames]
        twin.blocks = [opened.get(id(b), b) for b in self.blocks]
        return twin

    # --- fork and merge: the position rules of DESIGN section 3, shared by parser and engine ---
    def spawn(self, block: Block, sid: int, label: str) -> "Stream":
        """Open the next branch of ``block``: it starts at pos(</Goal>) + 1, like every sibling."""
        k = len(block.paths)
        child = Stream(sid=sid, address=self.address + ((block.start, k),), parent=self, label=label,
                       start_pos=block.goal_end_pos + 1, next_pos=block.goal_end_pos + 1,
                       start_step=block.goal_end_step + 1, next_step=block.goal_end_step + 1,
                       position_rule=self.position_rule,
                       siblings_from=block.paths[0].sid if block.paths else sid, block=block)
        block.paths.append(child)
        return child

    def merge(self, frame: Block):
        """All branches closed. <Conclusion> gets g + L + 1 (g = pos(</Goal>), L = the largest pos(</Path>) - g).

        Under the reference rule what precedes it (its separator) counts on from the last path in sequence
        order; under "branch-start" the separator already starts at g + L + 1.
        """
        frame.conclusion_pos = max(c.next_pos for c in frame.paths)
        self.next_step = max(c.next_step for c in frame.paths)
        self.next_pos = frame.paths[-1].next_pos if self.position_rule == REFERENCE else frame.conclusion_pos
        frame.phase = MERGED

    # --- what the structure logits processor may allow next -------------------------------------
    def allowed_tags(self, max_depth: int, max_branches: int) -> set[int]:
        """Tags that keep the stream well-formed; the engine forces <Path>/<Conclusion> itself."""
        if self.is_branch and not self.opened:
            return {PATH}
        top = self.top
        if top is None:
            allowed = set()
            if self.depth < max_depth:
                allowed.add(PARALLEL)
            allowed.add(END_PATH) if self.is_branch else allowed.update((THINK, END_THINK))
            return allowed
        return {
            EXPECT_GOAL: {GOAL},
            GOAL_OPEN: ({OUTLINE} if len(top.outlines) < max_branches else set())
            | ({END_GOAL} if top.outlines else set()),
            IN_OUTLINE: {END_OUTLINE},
            FORKED: set(),
            MERGED: {CONCLUSION},
            IN_CONCLUSION: {END_CONCLUSION},
            CONCLUDED: {END_PARALLEL},
        }[top.phase]


# --- repairs: the events the strict grammar refuses, as the parser and the engine report them --------------
_REPAIR_RULES = {CLOSE: "abandoned-block", EMPTY_GOAL: "empty-goal", POP: "incomplete-conclusion"}


def repair(event: str, stream: Stream, reason: str) -> tuple[str, str] | None:
    """(rule, message) of an event ``stream.step`` returned that breaks a strict rule; None if it breaks none."""
    if event == STRAY:
        if stream.is_branch and not stream.opened:
            return "path-count", f"expected <Path> for path {stream.label}, found {reason}"
        return "stray-tag", reason
    if event not in _REPAIR_RULES or not reason:
        return None
    return _REPAIR_RULES[event], f"path {stream.label}: {reason}" if event == CLOSE else reason


def truncations(stream: Stream, start_of) -> list[str]:
    """Messages of the ``truncated`` repairs of input that ends in ``stream``: its open blocks, innermost first,
    and its paths, up to the root. ``start_of(stream, block)`` is a block's first unit in the caller's units."""
    messages = []
    while True:
        for frame in reversed(stream.frames):
            messages.append(f"input ends inside the block at {start_of(stream, frame)} ({frame.phase})")
        if not stream.is_branch:
            return messages
        messages.append(f"input ends inside path {stream.label}")
        stream = stream.parent
