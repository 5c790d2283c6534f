"""Bookkeeping for the parallel engine: plain Python objects, one per branch, per output row and per prompt.

A ``Branch`` wraps the grammar's ``Stream`` with what decoding needs: its tokens, where each went in
the KV cache, a queue of forced tokens (what the seed policy forces, ``seeds``), and its forks. A
``PromptRow`` is one admitted prompt in one row of the KV cache; a ``PromptState`` is one output row.
"""

from collections import Counter, deque
from dataclasses import dataclass, field

from .structure import Stream


@dataclass(eq=False)  # identity, so branches can key dicts
class Branch:
    stream: Stream
    sample: int  # the output row (prompt-major: prompt b's samples are rows b*n .. b*n+n-1)
    prompt: int = 0  # the prompt it decodes (streamers follow a continuous batch by it)
    parent: "Branch | None" = None
    cut: int = 0  # where it forked from its parent: the parent's tokens before the fork
    tokens: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    slots: list = field(default_factory=list)  # cache slot of each written token
    logits: list = field(default_factory=list)  # recorded logits of each written token
    in_hand: dict = field(default_factory=dict)  # token index -> (raw logits, processed scores) it was chosen from
    queue: deque = field(default_factory=deque)  # tokens to force before sampling again (seeds.py)
    forks: list = field(default_factory=list)  # (tokens before the fork, [child branches])
    done: bool = False  # emits nothing more
    suspended: bool = False  # waiting for its branches to close
    queued: bool = False  # sequential paths: waiting for its earlier siblings to end
    closed_by_cut: bool = False  # a budget cut closed it with tags (tree.Trees.close), not the model
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
        return not self.done and not self.suspended and not self.queued

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

    index: int  # the prompt
    streams: list  # sid -> Stream; one sid space for the prompt and all its samples
    length: int  # next free cache slot
    prompt_ids: list  # the prompt without its padding
    pad: int = 0  # left-padding slots of this prompt
    cache_row: int = 0  # its row of the KV cache, freed for the next prompt when all its samples are done
    prompt_streams: int = 0  # streams[:prompt_streams] are the prompt's own (its parse); samples' follow


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
    first_step: int = 0  # the engine step it was admitted at: its branches count steps from there
    queued: list = field(default_factory=list)  # sequential paths: branches waiting for their turn, in order
    admitted_at: float = 0.0  # perf_counter at admission
    seconds: float = 0.0  # admission to done
    summary: dict | None = None  # its statistics and tree once done (generation_outputs.summary_of)
    repairs: list = field(default_factory=list)  # (branch, index in its stream, rule, message) per broken rule

    @property
    def prompt_ids(self) -> list:
        return self.row.prompt_ids
