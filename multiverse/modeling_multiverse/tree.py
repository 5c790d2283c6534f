"""Branch bookkeeping: a prompt's samples, and what an emitted token does to its branch (fork, close, merge).

Plain Python over ``branches.Branch``; the device side is one layout call per new stream. ``</Goal>`` forks
one branch per outline, seeded by the seed policy (``seeds``); when every branch of a fork has closed its
``</Path>``, the parent resumes with what the policy forces at a merge. Positions and grammar are
``structure.Stream``'s, the ones training uses.

With ``sequential`` paths (``generate(sequential_paths=True)``) a fork opens its branches as usual (same
streams, positions, visibility, cache slots) but only one is live at a time: the next starts when the one
before it has ended. That is autoregressive decoding of the same model by the same code, batching included.
"""

from collections import deque

from .branches import Branch, PromptRow, PromptState
from .budget_cuts import local_cost
from .layout import layout_from_parse
from .parser import IncrementalParser
from .structure import CLOSE, EMPTY_GOAL, FORK, OK, POP, STRAY
from .tags import END_OUTLINE


class Trees:
    def __init__(self, tag_ids: list, position_rule: str, runner, sampler, seeds, streamer, num_samples: int,
                 max_new_tokens: int, eos: set, sequential: bool = False):
        self.sequential = sequential
        self.tag_ids, self.position_rule, self.runner, self.sampler = tag_ids, position_rule, runner, sampler
        self.seeds, self.streamer, self.n = seeds, streamer, num_samples
        self.max_new_tokens, self.eos = max_new_tokens, eos
        self.code_of = {t: c for c, t in enumerate(tag_ids)}
        self.states: dict[int, PromptState] = {}  # output row -> its state, from admission on

    # --- admission ---------------------------------------------------------------------------------
    def admit(self, prompt: int, ids: list, cache_row: int, pad: int, step: int):
        """Parse prompt ``ids`` into cache row ``cache_row`` (after ``pad`` padding slots) and open its samples.
        Returns its positions (the prompt's layout) for the prefill."""
        parser = IncrementalParser(False, True, "tokens", None, self.position_rule)
        parser.feed_ids(ids, self.tag_ids)
        if parser.cur.is_branch:
            raise ValueError(f"prompt {prompt} ends inside a <Path>; close it or cut the prompt before the block")
        layout = layout_from_parse(parser.result(len(ids)), offset=pad + 1, total=self.runner.capacity)
        self.runner.clear_row(cache_row)
        self.runner.set_layout(cache_row, layout)
        width = pad + len(ids)
        row = PromptRow(prompt, list(parser.streams), 1 + width, ids, pad=pad, cache_row=cache_row)
        first = len(row.streams)
        for s in range(self.n):
            self._add_sample(row, parser.cur, first, prompt * self.n + s, step)
        return layout.position_ids[1:1 + width]

    def _add_sample(self, row: PromptRow, prompt_stream, first_sample_sid: int, index: int, step: int):
        """A sample continues the prompt's stream in a copy of its own: a segment that sees the prompt but not
        the other samples (like paths over the prompt), so all samples read one copy of the prompt's KV."""
        stream = prompt_stream.twin(len(row.streams))
        root = Branch(stream=stream, sample=index, prompt=row.index, start_step=0, prompt_ids=row.prompt_ids)
        state = PromptState(index, row, root, branches=[root], first_step=step)
        self.states[index] = state
        row.streams.append(stream)
        self.runner.layout.add_sample(row.cache_row, stream.sid, prompt_stream.sid, first_sample_sid)
        root.presence_row = self.sampler.new_row(tokens=row.prompt_ids)
        state.closing = local_cost(stream)
        if state.closing > self.max_new_tokens:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} cannot even close the block prompt {row.index} "
                             f"leaves open ({state.closing} closing tags)")
        root.queue.extend(self.seeds.at_start(root, row.index, prompt_stream.sid))

    # --- emission ----------------------------------------------------------------------------------
    def emit(self, br: Branch, token: int, step: int):
        """``br`` takes ``token`` at (its prompt's) decode ``step``."""
        state, stream = self.states[br.sample], br.stream
        code = self.code_of.get(token)
        pos = stream.place(code)  # the position rule lives in structure.Stream.place
        br.tokens.append(token)
        br.positions.append(pos)
        br.pending = True
        br.start_step = step if br.start_step < 0 else br.start_step
        br.end_step = step
        state.generated += 1
        if self.streamer is not None:
            self.streamer.on_token(br, token)
        if code is None:
            if token in self.eos and not stream.is_branch:
                br.done = True
            return
        frame = stream.top
        event, reason = stream.step(code, br.history_length - 1)
        if code == END_OUTLINE and event == OK:
            frame.outlines[-1].end = br.history_length  # the grammar keeps a tag's first unit; the span ends here
        elif event == FORK:
            frame.goal_end_pos = pos
            self._fork(state, br, frame)
        elif event == CLOSE:
            br.done = True
            if reason:
                state.events["abandoned_block"] += 1
            self._maybe_merge(br.parent)
        elif event == EMPTY_GOAL:
            state.events["empty_goal"] += 1
        elif event == POP and reason:
            state.events["incomplete_conclusion"] += 1
        elif event == STRAY:
            state.events["stray_tag"] += 1

    def _fork(self, state: PromptState, br: Branch, frame):
        children = []
        for k, outline in enumerate(frame.outlines):
            outline = br.history(outline.start + 1, outline.end - 1)  # its text, between the tags
            child = Branch(stream=None, sample=state.index, prompt=br.prompt, parent=br, cut=len(br.tokens))
            label, seed = self.seeds.at_fork(br, k, outline, self.tag_ids, child)
            child.stream = br.stream.spawn(frame, len(state.row.streams), label)
            child.queue = deque(seed)
            state.row.streams.append(child.stream)
            child.presence_row = self.sampler.new_row(source_row=br.presence_row)
            child.queued = self.sequential and k > 0
            children.append(child)
            state.branches.append(child)
            self.runner.layout.add_stream(state.row.cache_row, child.stream)
        br.forks.append((len(br.tokens), children))
        if self.sequential:
            state.queued[:0] = children[1:]  # nested paths go before the outer block's later paths
        br.suspended = True
        state.forks += 1
        if self.streamer is not None:
            self.streamer.on_fork(br, children)

    def _maybe_merge(self, parent: Branch):
        cut, children = parent.forks[-1]
        if not all(c.done and c.stream.closed for c in children):
            return
        parent.stream.merge(parent.stream.top)
        parent.suspended = False
        self.sampler.absorb(parent.presence_row, [c.presence_row for c in children])
        parent.queue.extend(self.seeds.at_merge(parent, self.tag_ids))
        if self.streamer is not None:
            self.streamer.on_merge(parent, children)

    def next_turn(self, state: PromptState):
        """Sequential paths: a queued branch goes live once the sibling before it has ended (closed, or stopped)."""
        while state.queued:
            br = state.queued[0]
            _, siblings = br.parent.forks[-1]
            before = siblings[siblings.index(br) - 1]
            if not before.done:
                return
            br.queued = False
            state.queued.pop(0)

