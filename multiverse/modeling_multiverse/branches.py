"""Bookkeeping for the parallel engine: plain Python objects, one per branch, per output row and per prompt.

A ``Branch`` wraps the grammar's ``Stream`` with what decoding needs: its tokens, where each went in
the KV cache, a queue of forced tokens (path/conclusion seeds, or a replay script), and its forks.
"""

from collections import Counter, deque
from dataclasses import dataclass, field

from .parser import default_label
from .structure import Stream
from .tags import CONCLUSION_SEED, LABEL_PATTERN, PATH_SEED


@dataclass(eq=False)  # identity, so branches can key dicts
class Branch:
    stream: Stream
    sample: int  # the output row (prompt-major: prompt b's samples are rows b*n .. b*n+n-1)
    parent: "Branch | None" = None
    cut: int = 0  # where it forked from its parent: the parent's tokens before the fork
    tokens: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    slots: list = field(default_factory=list)  # cache slot of each written token
    logits: list = field(default_factory=list)  # recorded logits of each written token
    in_hand: dict = field(default_factory=dict)  # token index -> (raw logits, processed scores) it was chosen from
    queue: deque = field(default_factory=deque)  # tokens to force before sampling again
    script_sid: int | None = None  # forced replay: the parsed stream this branch reproduces
    forks: list = field(default_factory=list)  # (tokens before the fork, [child branches])
    done: bool = False  # emits nothing more
    suspended: bool = False  # waiting for its branches to close
    pending: bool = False  # last token emitted but not yet written to the cache
    start_step: int = -1
    end_step: int = -1
    presence_row: int = -1
    prompt_ids: list = field(default_factory=list)  # the root's history starts with its prompt

    @property
    def history_length(self) -> int:
        """Grammar indices (block ids, outline starts) count the stream's history: prompt + tokens for the root."""
        return len(self.prompt_ids) + len(self.tokens)

    def history(self, start: int, end: int | None = None) -> list:
        return (self.prompt_ids + self.tokens)[start:end] if self.prompt_ids else self.tokens[start:end]

    @property
    def active(self) -> bool:
        return not self.done and not self.suspended

    def linearize(self, upto: int | None = None) -> tuple[list, list, list]:
        """Tokens, their recorded logits (None where unwritten) and what each was chosen from (None where
        nothing was recorded), in training order; ``upto`` stops before own token ``upto`` and the fork there."""
        end = len(self.tokens) if upto is None else upto
        tokens, logits, chosen, i = [], [], [], 0
        padded = self.logits + [None] * (len(self.tokens) - len(self.logits))
        for cut, children in self.forks:
            if cut >= end and upto is not None:
                break
            tokens += self.tokens[i:cut]
            logits += padded[i:cut]
            chosen += [self.in_hand.get(j) for j in range(i, cut)]
            i = cut
            for child in children:
                t, lg, ch = child.linearize()
                tokens, logits, chosen = tokens + t, logits + lg, chosen + ch
        return (tokens + self.tokens[i:end], logits + padded[i:end],
                chosen + [self.in_hand.get(j) for j in range(i, end)])

    def visible_tokens(self) -> list:
        """What this branch sees, in training order: its prompt, its ancestors up to its fork, its own tokens
        (with its finished blocks' paths). Siblings are not in it."""
        own = self.linearize()[0]
        if self.parent is None:
            return self.prompt_ids + own
        return self.parent.visible_before(self.cut) + own

    def visible_before(self, cut: int) -> list:
        head = self.linearize(upto=cut)[0]
        return (self.prompt_ids if self.parent is None else self.parent.visible_before(self.cut)) + head


@dataclass
class PromptRow:
    """One prompt's row of the KV cache, shared by its ``num_return_sequences`` samples."""

    index: int
    streams: list  # sid -> Stream; one sid space for the prompt and all its samples
    length: int  # next free cache slot
    prompt_ids: list  # the prompt without its padding
    pad: int = 0  # left-padding slots of this prompt


@dataclass
class PromptState:
    """One output row: a sample of a prompt, decoded as a tree of branches over its prompt's cache row."""

    index: int
    row: PromptRow
    root: Branch
    branches: list = field(default_factory=list)
    generated: int = 0
    closing: int = 0  # tags that closing every open stream would take now (budget_cuts)
    steps: int = 0
    forks: int = 0
    done: bool = False
    events: Counter = field(default_factory=Counter)

    @property
    def prompt_ids(self) -> list:
        return self.row.prompt_ids


class Seeds:
    """Forced token ids of path and conclusion seeds, from the tokenizer or the config's char table."""

    def __init__(self, tokenizer=None, char_ids: dict | None = None):
        if tokenizer is None and not char_ids:
            raise ValueError("parallel generate needs `tokenizer=` (or config.multiverse_seed_token_ids, written by "
                             "`multiverse convert`) to seed each path with `\\n<Path>\\n1:`")
        self.tokenizer, self.char_ids = tokenizer, char_ids or {}
        self.char_of = {v: k for k, v in self.char_ids.items()}

    def encode(self, text: str, tag_ids: list) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.encode(text, add_special_tokens=False)
        from .tags import TAG_PATTERN, TAGS

        ids, pos = [], 0
        for m in TAG_PATTERN.finditer(text):
            ids += [self.char_ids[c] for c in text[pos:m.start()]]
            ids.append(tag_ids[TAGS.index(m.group())])
            pos = m.end()
        return ids + [self.char_ids[c] for c in text[pos:]]

    def label(self, outline_ids: list) -> str:
        if self.tokenizer is not None:
            text = self.tokenizer.decode(outline_ids)
        else:
            text = "".join(self.char_of.get(t, "\x00") for t in outline_ids[:16])
        m = LABEL_PATTERN.match(text)
        return m.group(1) if m else ""

    def path(self, parent: Stream, k: int, outline_ids: list, tag_ids: list) -> tuple[str, list[int]]:
        label = self.label(outline_ids) or default_label(parent, k)
        return label, self.encode(PATH_SEED.format(label=label), tag_ids)

    def conclusion(self, tag_ids: list) -> list[int]:
        return self.encode(CONCLUSION_SEED, tag_ids)
