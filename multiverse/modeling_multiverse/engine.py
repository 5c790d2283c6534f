"""The parallel decoding engine: every active branch of every prompt in one forward pass per step.

A step writes the tokens emitted in the previous step (one query row per branch, into its prompt's
KV-cache row) and emits the next token of every active branch. ``</Goal>`` forks one branch per
outline, seeded with ``\\n<Path>\\n{label}:``; when every branch has closed its ``</Path>``, the
parent resumes with ``\\n<Conclusion>``. The grammar, the layout positions and the mask are the ones
training uses (structure.Stream, masks.dense_mask), so the result equals teacher forcing.
``num_return_sequences`` samples of a prompt are trees of their own over the prompt's one cache row.
Tokens are chosen in ``choosing``; a budget or a stopping criterion closes what is open (``budget_cuts``),
and ``generated + closing tags`` never passes ``max_new_tokens``.
Bookkeeping is plain Python; tensors live in preallocated buffers; one ``.tolist()`` per step.
"""

import copy
import time
from collections import Counter, deque

import numpy as np
import torch

from .budget_cuts import growth, local_cost, own_closing
from .branches import Branch, PromptRow, PromptState, Seeds
from .compat import CACHE_KWARG
from .decode_graphs import held_static_step
from .kv_cache import BranchKVCache, LayoutBuffers
from .placement import kv_layers, tensor_parallel_group
from .layout import layout_from_parse
from .parser import IncrementalParser, ParseResult, _id_items, default_label
from .choosing import TokenChooser
from .sampling import BranchSampler
from .structure import CLOSE, EMPTY_GOAL, FORK, POP, STRAY
from .tags import END_OUTLINE, OUTLINE


class ParallelEngine:
    def __init__(self, model, generation_config, processor, seeds: Seeds | None, options: dict):
        self.model, self.gc, self.processor, self.seeds = model, generation_config, processor, seeds
        self.tag_ids = list(model.config.multiverse_tag_ids)
        self.position_rule = getattr(model.config, "multiverse_position_rule", "reference")
        self.code_of = {t: c for c, t in enumerate(self.tag_ids)}
        eos = generation_config.eos_token_id
        self.eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self.pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
        self.max_new_tokens = generation_config.max_new_tokens or 256
        self.max_critical_path = options.get("max_critical_path")
        self.min_new_tokens = options.get("min_new_tokens") or 0
        self.num_samples = generation_config.num_return_sequences or 1
        # HF-style processors and stopping criteria, applied per branch row to the ids that branch can see.
        self.processors = options.get("logits_processor") or None
        self.criteria = options.get("stopping_criteria") or None
        self.record_logits = options.get("output_logits", False)  # logits at every written token (parity)
        self.record_chosen = bool(options.get("output_scores") or self.record_logits)  # what each token came from
        self.streamer = options.get("streamer")
        self.seed = options.get("seed")
        # cuda_graphs: decode steps replayed from CUDA graphs. static_decode: the same static-shape step
        # run eagerly (how CPU tests check the graphs' step against the eager one).
        self.cuda_graphs = bool(options.get("cuda_graphs"))
        self.static_decode = self.cuda_graphs or bool(options.get("static_decode"))

    # --- set-up ------------------------------------------------------------------------------------
    def _start(self, input_ids, attention_mask, forced):
        device = input_ids.device
        batch, width = input_ids.shape
        capacity = 1 + width + self.num_samples * self.max_new_tokens + 1  # the samples of a prompt share its row
        model_dtype = next(self.model.parameters()).dtype
        if self.static_decode:
            self.cache, self.layout, self.decode_step = held_static_step(self.model, batch, capacity, model_dtype,
                                                                         device, self.pad, self.cuda_graphs)
            capacity = self.cache.capacity
        else:
            self.cache = BranchKVCache(self.model.config, batch, capacity, model_dtype, device,
                                       layers=kv_layers(self.model, device))
            self.layout = LayoutBuffers(batch, capacity, device)
            self.decode_step = None
        self.sampler = BranchSampler(self.gc, batch * self.num_samples, self.model.config.vocab_size, device,
                                     self.seed)
        self.tp_group = tensor_parallel_group(self.model)
        self.chooser = TokenChooser(self.processor, self.sampler, self.max_new_tokens, self.min_new_tokens,
                                    self.processors, self.criteria, self.pad, self.model.config.vocab_size,
                                    self.tp_group)
        self.prompts, self.rows, self.scripts = [], [], []
        positions = torch.zeros(batch, width, dtype=torch.long)
        for b in range(batch):
            keep = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(width, dtype=torch.bool)
            ids = input_ids[b].cpu()[keep].tolist()
            pad = width - len(ids)
            if keep[:pad].any():
                raise ValueError("parallel generate needs left-padded prompts (padding_side='left')")
            parser = IncrementalParser(False, True, "tokens", None, self.position_rule)
            for item in _id_items(ids, self.tag_ids):
                parser.feed(*item)
            if parser.cur.is_branch:
                raise ValueError(f"prompt {b} ends inside a <Path>; close it or cut the prompt before the block")
            result = ParseResult("tokens", len(ids), [], [], [], [tuple(r) for r in parser.runs], parser.streams,
                                 parser.fork_children)
            layout = layout_from_parse(result, offset=pad + 1, total=capacity)
            self.layout.segments[b] = layout.segment_ids.to(device)
            positions[b] = layout.position_ids[1:1 + width]
            self.layout.set_visibility(b, layout.visibility)
            row = PromptRow(b, list(parser.streams), 1 + width, ids, pad=pad)
            self.rows.append(row)
            if forced is not None:
                self.scripts.append(self._script(ids, list(forced[b])))
            first = len(row.streams)
            for _ in range(self.num_samples):
                self._add_sample(row, parser.cur, first)
        slots = torch.arange(1, 1 + width, device=device).expand(batch, -1)
        return positions.to(device), slots

    def _add_sample(self, row: PromptRow, prompt_stream, first_sample_sid: int):
        """A sample continues the prompt's stream in a copy of its own: a segment that sees the prompt but not
        the other samples (like paths over the prompt), so all samples read one copy of the prompt's KV."""
        stream = copy.deepcopy(prompt_stream)
        stream.sid = len(row.streams)
        root = Branch(stream=stream, sample=len(self.prompts), start_step=0, prompt_ids=row.prompt_ids)
        state = PromptState(len(self.prompts), row, root, branches=[root])
        self.prompts.append(state)
        row.streams.append(stream)
        self.layout.add_sample(row.index, stream.sid, prompt_stream.sid, first_sample_sid)
        root.presence_row = self.sampler.new_row(tokens=row.prompt_ids)
        state.closing = local_cost(stream)
        if state.closing > self.max_new_tokens:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} cannot even close the block prompt {row.index} "
                             f"leaves open ({state.closing} closing tags)")
        if self.scripts:
            root.script_sid = prompt_stream.sid
            root.queue.extend(self.scripts[row.index].get(root.script_sid, []))

    def _script(self, prompt_ids, completion):
        """Forced replay: the tokens of each stream of prompt+completion, parsed like training data."""
        parser = IncrementalParser(False, True, "tokens", None)
        for item in _id_items(prompt_ids + completion, self.tag_ids):
            parser.feed(*item)
        per_sid = {}
        ids = np.asarray(prompt_ids + completion)
        for start, end, sid, _ in parser.runs:
            start = max(start, len(prompt_ids))
            if end > start:
                per_sid.setdefault(sid, []).extend(ids[start:end].tolist())
        per_sid["forks"] = parser.fork_children
        return per_sid

    # --- one forward over the rows to write ----------------------------------------------------------
    def _forward(self, input_ids, position_ids, slots, keep_last: bool):
        kv_length = max(r.length for r in self.rows)
        self.cache.prepare(slots, kv_length)
        mask = self.layout.mask(slots, kv_length)
        if self.model.config._attn_implementation == "eager":
            mask = torch.zeros(mask.shape, dtype=self.cache.keys[0].dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(self.cache.keys[0].dtype).min)
        out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask={"full_attention": mask},
                         **{CACHE_KWARG: self.cache}, use_cache=True, logits_to_keep=1 if keep_last else 0)
        return out.logits

    def _write_rows(self):
        """Rows for every token emitted last step: [B, Q] ids, positions, slots; and (prompt, branch) per row."""
        n = self.num_samples
        rows = [[br for p in self.prompts[b * n:(b + 1) * n] if not p.done for br in p.branches if br.pending]
                for b in range(len(self.rows))]
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        pos = np.zeros((len(rows), width), dtype=np.int64)
        slots = np.zeros((len(rows), width), dtype=np.int64)  # 0: scratch, for padding rows
        sids = np.zeros((len(rows), width), dtype=np.int64)
        for b, branches in enumerate(rows):
            row = self.rows[b]
            for q, br in enumerate(branches):
                ids[b, q], pos[b, q], sids[b, q] = br.tokens[-1], br.positions[-1], br.stream.sid
                slots[b, q] = row.length
                br.slots.append(row.length)
                row.length += 1
                br.pending = False
        device = self.layout.segments.device
        t = [torch.from_numpy(a).to(device, non_blocking=True) for a in (ids, pos, slots, sids)]
        self.layout.segments[self.cache.batch_index, t[2]] = t[3]
        return t[0], t[1], t[2], rows

    # --- emission ------------------------------------------------------------------------------------
    def _emit(self, br: Branch, token: int, step: int):
        state, stream = self.prompts[br.sample], br.stream
        pos = stream.place(self.code_of.get(token))  # the position rule lives in structure.Stream.place
        br.tokens.append(token)
        br.positions.append(pos)
        br.pending = True
        br.start_step = step if br.start_step < 0 else br.start_step
        br.end_step = step
        state.generated += 1
        if self.streamer is not None:
            self.streamer.on_token(br, token)
        code = self.code_of.get(token)
        if code is None:
            if token in self.eos and not stream.is_branch:
                br.done = True
            return
        frame = stream.top
        event, reason = stream.step(code, br.history_length - 1)
        if event == FORK:
            frame.goal_end_pos = pos
            self._fork(state, br, frame)
        elif event == CLOSE:
            br.done = True
            if reason:
                state.events["abandoned_block"] += 1
            self._maybe_merge(state, br.parent)
        elif event == EMPTY_GOAL:
            state.events["empty_goal"] += 1
        elif event == POP and reason:
            state.events["incomplete_conclusion"] += 1
        elif event == STRAY:
            state.events["stray_tag"] += 1

    def _fork(self, state: PromptState, br: Branch, frame):
        children = []
        fork_index = len(br.forks)
        for k, start in enumerate(frame.outline_starts):
            outline = br.history(start + 1, start + 1 + 64)
            ends = [i for i, t in enumerate(outline) if self.code_of.get(t) in (END_OUTLINE, OUTLINE)]
            outline = outline[:ends[0]] if ends else outline
            if br.script_sid is not None:  # a replay's script holds the seeds; the label is only a name
                label, seed = default_label(br.stream, k), []
            else:
                label, seed = self.seeds.path(br.stream, k, outline, self.tag_ids)
            child_stream = br.stream.spawn(frame, len(state.row.streams), label)
            state.row.streams.append(child_stream)
            child = Branch(stream=child_stream, sample=state.index, parent=br, cut=len(br.tokens), queue=deque(seed))
            if br.script_sid is not None:
                script = self.scripts[state.row.index]
                forks = script["forks"].get(br.script_sid, [])
                sids = forks[fork_index] if fork_index < len(forks) else []
                child.script_sid = sids[k] if k < len(sids) else -1
                child.queue.extend(script.get(child.script_sid, []))
            child.presence_row = self.sampler.new_row(source_row=br.presence_row)
            children.append(child)
            state.branches.append(child)
            self._grow_visibility(state, child_stream)
        br.forks.append((len(br.tokens), children))
        br.suspended = True
        state.forks += 1
        if self.streamer is not None:
            self.streamer.on_fork(br, children)

    def _grow_visibility(self, state: PromptState, stream):
        self.layout.add_stream(state.row.index, stream)

    def _maybe_merge(self, state: PromptState, parent: Branch):
        cut, children = parent.forks[-1]
        if not all(c.done and c.stream.closed for c in children):
            return
        parent.stream.merge(parent.stream.top)
        parent.suspended = False
        self.sampler.absorb(parent.presence_row, [c.presence_row for c in children])
        if parent.script_sid is None:
            parent.queue.extend(self.seeds.conclusion(self.tag_ids))
        if self.streamer is not None:
            self.streamer.on_merge(parent, children)

    # --- the loop ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, input_ids, attention_mask=None, forced=None):
        config = self.model.config
        impl = config._attn_implementation
        # The engine's masks are dense [B, 1, Q, K] bools over a handful of query rows: sdpa's job. A
        # BlockMask pays off on long training sequences; flex would read a tensor mask as a score bias.
        if impl not in ("sdpa", "eager"):
            config._attn_implementation = "sdpa"
        try:
            return self._run(input_ids, attention_mask, forced)
        finally:
            config._attn_implementation = impl

    def _run(self, input_ids, attention_mask, forced):
        started = time.perf_counter()
        positions, slots = self._start(input_ids, attention_mask, forced)
        logits = self._forward(input_ids, positions, slots, keep_last=True)
        where = {p.root: (p.row.index, 0) for p in self.prompts}  # every sample starts from its prompt's row
        step = 0
        while True:
            step += 1
            self._emit_step(logits, where, step)
            if all(p.done for p in self.prompts):
                break
            ids, pos, slots, rows = self._write_rows()
            if self.decode_step is not None:
                logits = self.decode_step(ids, pos, slots)
            else:
                logits = self._forward(ids, pos, slots, keep_last=False)
            if self.record_logits:
                for b, branches in enumerate(rows):
                    for q, br in enumerate(branches):
                        br.logits.append(logits[b, q].float().cpu())
            where = {br: (b, q) for b, branches in enumerate(rows) for q, br in enumerate(branches)}
        for p in self.prompts:
            p.seconds = time.perf_counter() - started
        if self.streamer is not None:
            self.streamer.end()
        return self.prompts

    def _emit_step(self, logits, where: dict, step: int):
        """Emit one token for every active branch: forced from its queue, else sampled from its row.
        ``where``: (cache row, query row) of the logits each branch holds."""
        sample, emitted, self.step_scores = [], [], {}
        for state in self.prompts:
            if state.done:
                continue
            for br in [br for br in state.branches if br.active]:
                if br.queue:
                    emitted.append((br, br.queue.popleft()))
                elif br.script_sid is not None:
                    br.done = True  # a replay script ran out: the target stops here
                elif br not in where:
                    raise RuntimeError(f"engine bug: branch {br.stream.label!r} has neither a forced token nor logits")
                else:
                    sample.append(br)
        if self.record_chosen:
            for br, token in emitted:  # forced: the logits in hand, if any (a path's first: its parent's)
                held = where.get(br) or (where.get(br.parent) if not br.tokens else None)
                # a copy: a CUDA-graph step rewrites its logits buffer in place
                br.in_hand[len(br.tokens)] = (None if held is None else logits[held].clone(), None)
        if emitted and self.sampler.presence is not None:
            self.sampler.observe([br.presence_row for br, _ in emitted],
                                 torch.tensor([t for _, t in emitted], device=logits.device))
        if sample:
            emitting = Counter([br.sample for br, _ in emitted] + [br.sample for br in sample])
            emitted += self._choose(logits, where, sample, emitting)
        done = []
        for br, token in emitted:
            state = self.prompts[br.sample]
            if state.done:
                continue  # cut earlier in this step: the rest of its rows are not emitted
            code = self.code_of.get(token)
            grow = 0 if code is None else growth(br.stream, code)
            if state.generated + state.closing + 1 + grow > self.max_new_tokens:
                self._cut(state, "token_budget_exhausted")  # fewer rows on the last step: never past the budget
                continue
            self._emit(br, token, step)
            state.closing += grow
            done.append(br)
        if self.criteria is not None and done:
            self._check_criteria(done)
        for b in {br.sample for br in done}:
            self.prompts[b].steps += 1
        for state in self.prompts:
            self._check_limits(state)

    def _choose(self, logits, where, sample: list, emitting: Counter) -> list:
        index = torch.tensor([where[br] for br in sample], device=logits.device)
        raw = logits[index[:, 0], index[:, 1]]
        tokens, scores, rules = self.chooser(raw, sample, [self.prompts[br.sample] for br in sample], emitting)
        self.step_scores = dict(zip(sample, scores))
        for i, (br, rule) in enumerate(zip(sample, rules)):
            self.prompts[br.sample].events["path_budget_closed"] += rule[2]
            if self.record_chosen:
                br.in_hand[len(br.tokens)] = (raw[i], scores[i])
        return list(zip(sample, tokens))

    def _check_criteria(self, emitted: list):
        """A branch row whose stopping criterion fires ends its whole output row, closed like a budget cut."""
        for br, stop in zip(emitted, self.chooser.stops(emitted, self.step_scores, self.layout.segments.device)):
            if stop and not self.prompts[br.sample].done:
                self._cut(self.prompts[br.sample], "stopped")

    def _check_limits(self, state: PromptState):
        if state.done:
            return
        if not any(br.active for br in state.branches):
            state.done = True
        elif state.generated + state.closing >= self.max_new_tokens:
            self._cut(state, "token_budget_exhausted")
        elif self.max_critical_path is not None and state.steps >= self.max_critical_path:
            self._cut(state, "critical_path_exhausted")
        if state.done:
            for br in state.branches:
                br.done = True

    def _cut(self, state: PromptState, event: str):
        """A budget or a stopping criterion ends the sample: close what is open, so it reads back as the same tree."""
        state.events[event] += 1
        closing = [(br, own_closing(br.stream)) for br in state.branches]
        if any(codes for _, codes in closing):
            state.events["cut"] += 1
            for br, codes in closing:
                for code in codes:
                    br.tokens.append(self.tag_ids[code])
                    if self.streamer is not None:  # streamed text stays the returned sequence
                        self.streamer.on_token(br, self.tag_ids[code])
        state.done = True
        for br in state.branches:
            br.done = True
