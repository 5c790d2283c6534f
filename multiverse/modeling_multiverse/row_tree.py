"""The tree, critical path and repairs of one output row, read from what the engine already holds.

The engine's branches carry the grammar's records (``structure.Stream`` per branch, ``structure.Block`` per
block, with indices in each stream's own history) and the step clock; what the returned sequence needs on top
is where each branch's tokens land in it. ``linear_index`` walks the branches in training order, as
``Branch.linearize`` lays them out, and every index is mapped through it: nothing is parsed again.
Blocks the prompt closed come from the prompt's parse, already in the sequence's units.
"""

from .structure import truncations


def linear_index(root, offset: int) -> tuple[dict, dict]:
    """Where each branch's own tokens land in the sequence (``offset``: the prompt's length), and each branch's
    [first, end) span. Iterative, in ``Branch.linearize``'s order: a fork's paths one after the other."""
    where, spans, pos = {}, {}, offset
    stack = [(root, 0, 0)]  # (branch, next fork, next own token)
    while stack:
        br, f, i = stack.pop()
        own = where.setdefault(br, [])
        spans.setdefault(br, [pos, pos])
        cut = br.forks[f][0] if f < len(br.forks) else len(br.tokens)
        own.extend(range(pos, pos + cut - i))
        pos += cut - i
        if f < len(br.forks):
            stack.append((br, f + 1, cut))
            stack.extend((child, 0, 0) for child in reversed(br.forks[f][1]))
        else:
            spans[br][1] = pos
    return where, spans


class RowTree:
    """One output row's structure in the returned sequence's units (prompt + completion, unpadded)."""

    def __init__(self, state):
        self.state, self.prompt = state, len(state.prompt_ids)
        self.where, self.spans = linear_index(state.root, self.prompt)
        self.branch_of = {id(br.stream): br for br in state.branches}
        self.length = self.spans[state.root][1]

    def unit(self, stream, index: int) -> int:
        """The sequence index of unit ``index`` of ``stream``'s history (a prompt stream's is the prompt's own)."""
        br = self.branch_of.get(id(stream))
        if br is None:
            return index
        if br.parent is None:  # the root's history is the prompt and then its tokens
            return index if index < self.prompt else self.where[br][index - self.prompt]
        return self.where[br][index]

    def end(self, stream, end: int) -> int:
        return -1 if end < 0 else self.unit(stream, end - 1) + 1

    def steps(self) -> int:
        """Decode steps of prompt + completion with only the longest path of each block counted: the step clock
        (``structure.Stream``) over the prompt's streams and the row's branches."""
        return max([self.prompt_steps] + [br.stream.next_step for br in self.state.branches])

    @property
    def prompt_steps(self) -> int:
        row = self.state.row
        return max((s.next_step for s in row.streams[:row.prompt_streams]), default=0)

    def repairs(self) -> list[str]:
        """Every broken rule in the completion, as the tolerant parser reports it ("rule@index: message")."""
        # in sequence order, as a parse meets them (the engine met them in decoding order: paths interleave)
        found = sorted(((self.unit(br.stream, index), rule, message) for br, index, rule, message in self.state.repairs),
                       key=lambda repair: repair[0])
        # the input ends in the last open path of the sequence, the deepest where several end together
        last = max((br for br in self.state.branches if br.stream.is_branch and not br.stream.closed and br.tokens),
                   key=lambda br: (self.spans[br][1], br.stream.depth), default=self.state.root)
        found += [(self.length, "truncated", m) for m in truncations(last.stream, lambda s, b: self.unit(s, b.start))]
        return [f"{rule}@{index}: {message}" for index, rule, message in found if index >= self.prompt]

    def as_dict(self) -> dict:
        """Blocks and paths as plain data (spans in the sequence's units), built with a stack, not recursion."""
        root = self.state.root.stream
        blocks = [self._block(root, b) for b in root.blocks]
        stack = list(zip(root.blocks, blocks))
        while stack:
            block, out = stack.pop()
            for path in block.paths:
                br = self.branch_of.get(id(path))
                if br is not None and not br.tokens:
                    continue  # a replay that ran out before this path began: it is not in the sequence
                start, end = (path.start, path.end) if br is None else \
                    (self.spans[br][0], self.spans[br][1] if path.closed else -1)
                inner = [self._block(path, b) for b in path.blocks]
                out["paths"].append({"label": path.label, "start": start, "end": end, "closed": path.closed,
                                     "blocks": inner})
                stack.extend(zip(path.blocks, inner))
        return {"length": self.length, "critical_path": self.steps(), "blocks": blocks}

    def _block(self, stream, block) -> dict:
        return {"start": self.unit(stream, block.start), "end": self.end(stream, block.end), "closed": block.closed,
                "outlines": [o.label for o in block.outlines], "paths": []}
