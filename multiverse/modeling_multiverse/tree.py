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
from .budget_cuts import local_cost, own_closing
from .layout import layout_from_parse
from .parser import IncrementalParser
from .structure import CLOSE, FORK, OK, POP, repair
from .tags import END_OUTLINE, END_PATH, PATH

# The event each repair is counted under in a row's statistics.
EVENT_OF_RULE = {"abandoned-block": "abandoned_block", "empty-goal": "empty_goal",
                 "incomplete-conclusion": "incomplete_conclusion", "stray-tag": "stray_tag", "path-count": "stray_tag"}


class Trees:
    def __init__(self, tag_ids: list, position_rule: str, runner, sampler, seeds, streamer,
                 max_new_tokens: int, eos: set, sequential: bool = False):
        self.sequential = sequential
        self.tag_ids, self.position_rule, self.runner, self.sampler = tag_ids, position_rule, runner, sampler
        self.seeds, self.streamer = seeds, streamer
        self.max_new_tokens, self.eos = max_new_tokens, eos
        self.code_of = {t: c for c, t in enumerate(tag_ids)}
        self.states: dict[int, PromptState] = {}  # output row -> its state, from admission on

    # --- admission ---------------------------------------------------------------------------------
    def admit(self, prompt: int, samples: list, ids: list, cache_row: int, pad: int, step: int):
        """Parse prompt ``ids`` into cache row ``cache_row`` (after ``pad`` padding slots) and open the output rows
        ``samples`` over it. Returns its positions (the prompt's layout) for the prefill."""
        parser = IncrementalParser(False, True, "tokens", None, self.position_rule)
        parser.feed_ids(ids, self.tag_ids)
        if parser.cur.is_branch:
            raise ValueError(f"prompt {prompt} ends inside a <Path>; close it or cut the prompt before the block")
        layout = layout_from_parse(parser.result(len(ids)), offset=pad + 1, total=self.runner.capacity)
        self.runner.clear_row(cache_row)
        self.runner.set_layout(cache_row, layout)
        width = pad + len(ids)
        row = PromptRow(prompt, list(parser.streams), 1 + width, ids, pad=pad, cache_row=cache_row,
                        prompt_streams=len(parser.streams))
        first = len(row.streams)
        for index in samples:
            self._add_sample(row, parser.cur, first, index, step)
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
        state = self.states[br.sample]
        br.pending = True
        br.start_step = step if br.start_step < 0 else br.start_step
        br.end_step = step
        state.generated += 1
        code = self._take(br, token)
        if code is None:
            if token in self.eos and not br.stream.is_branch:
                br.done = True
            return
        self._apply(state, br, code)

    def _take(self, br: Branch, token: int) -> int | None:
        """Append ``token`` to ``br`` at its position (the position rule lives in ``structure.Stream.place``)."""
        code = self.code_of.get(token)
        br.positions.append(br.stream.place(code))
        br.tokens.append(token)
        if self.streamer is not None:  # streamed text stays the returned sequence, closing tags included
            self.streamer.on_token(br, token)
        return code

    def _apply(self, state: PromptState, br: Branch, code: int, cut: bool = False):
        """The grammar's event for tag ``code`` just taken by ``br``: fork, close and merge, events and repairs
        (``cut``: a closing tag of a cut, whose fork opens paths that close at once)."""
        stream, frame, index = br.stream, br.stream.top, br.history_length - 1
        event, reason = stream.step(code, index)
        broken = repair(event, stream, reason)
        if broken is not None:
            state.repairs.append((br, index, *broken))
            state.events[EVENT_OF_RULE[broken[0]]] += 1
        if code == END_OUTLINE and event == OK:
            frame.outlines[-1].end = index + 1  # the grammar keeps a tag's first unit; the span ends here
        elif event == FORK:
            self._fork(state, br, frame, cut)
        elif event == CLOSE:
            br.done = True
            self._maybe_merge(br.parent, cut)
        elif event == POP:
            frame.end = index + 1
        return event

    def close(self, state: PromptState):
        """A cut: close every open stream with tags only (``budget_cuts.own_closing``), through the grammar as if
        emitted, so the tree, positions and step clock are those of the returned sequence: a branch's paths (opened
        after it) close first, a block cut in its goal forks empty paths, the last path merges its block."""
        for br in reversed(list(state.branches)):
            codes, i = own_closing(br.stream), 0
            br.closed_by_cut = bool(codes)
            while i < len(codes):
                self._take(br, self.tag_ids[codes[i]])
                if self._apply(state, br, codes[i], cut=True) == FORK:
                    i += 2 * len(br.stream.top.outlines)  # its empty paths: their own branches took them
                i += 1
            br.done = True  # after its tags: a streamer shows a branch until it is done

    def _fork(self, state: PromptState, br: Branch, frame, cut: bool = False):
        """``</Goal>``: one branch per outline, seeded by the seed policy. A cut's ``</Goal>`` opens them closed at
        once (``<Path></Path>``), named as their outlines spell out."""
        children = []
        for k, outline in enumerate(frame.outlines):
            text = br.history(outline.start + 1, outline.end - 1)  # its text, between the tags
            child = Branch(stream=None, sample=state.index, prompt=br.prompt, parent=br, cut=len(br.tokens),
                           done=cut, closed_by_cut=cut)
            if cut:
                label, seed = self.seeds.path_label(br.stream, k, text), []
            else:
                label, seed = self.seeds.at_fork(br, k, text, self.tag_ids, child)
                child.presence_row = self.sampler.new_row(source_row=br.presence_row)
                child.queued = self.sequential and k > 0
            child.stream = br.stream.spawn(frame, len(state.row.streams), label)
            child.queue = deque(seed)
            outline.label = label
            state.row.streams.append(child.stream)
            state.branches.append(child)
            children.append(child)
            if not cut:  # nothing of a cut's paths is decoded, so nothing of them reaches the cache
                self.runner.layout.add_stream(state.row.cache_row, child.stream)
        br.forks.append((len(br.tokens), children))
        br.suspended = True
        if not cut:
            if self.sequential:
                state.queued[:0] = children[1:]  # nested paths go before the outer block's later paths
            state.forks += 1
        if self.streamer is not None:
            self.streamer.on_fork(br, children)
        for child in children if cut else ():
            for code in (PATH, END_PATH):
                self._take(child, self.tag_ids[code])
                self._apply(state, child, code, cut=True)

    def _maybe_merge(self, parent: Branch, cut: bool = False):
        """After a path closed: merge its block once every path has (``cut``: closing tags only, nothing to seed)."""
        _, children = parent.forks[-1]
        if not all(c.done and c.stream.closed for c in children):
            return
        parent.stream.merge(parent.stream.top)
        parent.suspended = False
        if not cut:
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

