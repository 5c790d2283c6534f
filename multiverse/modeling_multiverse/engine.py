"""The parallel decoding engine: every active branch of every prompt in one forward pass per step.

A step writes the tokens emitted in the previous step (one query row per branch, into its prompt's
KV-cache row) and emits the next token of every active branch. ``</Goal>`` forks one branch per
outline, seeded with ``\\n<Path>\\n{label}:``; when every branch has closed its ``</Path>``, the
parent resumes with ``\\n<Conclusion>``. The grammar, the layout positions and the mask are the ones
training uses (structure.Stream, masks.dense_mask), so the result equals teacher forcing.
Bookkeeping is plain Python; tensors live in preallocated buffers; one ``.tolist()`` per step.
"""

import time
from collections import deque

import numpy as np
import torch

from .branches import Branch, PromptState, Seeds
from .compat import CACHE_KWARG
from .decode_graphs import held_static_step
from .kv_cache import BranchKVCache, LayoutBuffers
from .placement import agree_tokens, kv_layers, tensor_parallel_group
from .layout import layout_from_parse, visibility_matrix
from .parser import IncrementalParser, ParseResult, _id_items, default_label
from .sampling import BranchSampler
from .structure import CLOSE, EMPTY_GOAL, FORK, POP, STRAY, compatible
from .tags import END_OUTLINE, OUTLINE


class ParallelEngine:
    def __init__(self, model, generation_config, processor, seeds: Seeds | None, options: dict):
        self.model, self.gc, self.processor, self.seeds = model, generation_config, processor, seeds
        self.tag_ids = list(model.config.multiverse_tag_ids)
        self.code_of = {t: c for c, t in enumerate(self.tag_ids)}
        eos = generation_config.eos_token_id
        self.eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self.pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
        self.max_new_tokens = generation_config.max_new_tokens or 256
        self.max_critical_path = options.get("max_critical_path")
        self.record_logits = options.get("output_logits", False)
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
        capacity = 1 + width + self.max_new_tokens + 1
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
        self.sampler = BranchSampler(self.gc, batch, self.model.config.vocab_size, device, self.seed)
        self.tp_group = tensor_parallel_group(self.model)
        self.prompts, self.scripts = [], []
        positions = torch.zeros(batch, width, dtype=torch.long)
        for b in range(batch):
            keep = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(width, dtype=torch.bool)
            ids = input_ids[b].cpu()[keep].tolist()
            pad = width - len(ids)
            if keep[:pad].any():
                raise ValueError("parallel generate needs left-padded prompts (padding_side='left')")
            parser = IncrementalParser(False, True, "tokens", None)
            for item in _id_items(ids, self.tag_ids):
                parser.feed(*item)
            if parser.cur.is_branch:
                raise ValueError(f"prompt {b} ends inside a <Path>; close it or cut the prompt before the block")
            result = ParseResult("tokens", len(ids), [], [], [], [tuple(r) for r in parser.runs], parser.streams, {})
            layout = layout_from_parse(result, offset=pad + 1, total=capacity)
            self.layout.segments[b] = layout.segment_ids.to(device)
            positions[b] = layout.position_ids[1:1 + width]
            self.layout.set_visibility(b, visibility_matrix([s.address if s.sid else None for s in parser.streams]))
            root = Branch(stream=parser.cur, prompt=b, start_step=0, prompt_ids=ids)
            state = PromptState(b, root, list(parser.streams), 1 + width, ids, pad=pad, branches=[root])
            root.presence_row = self.sampler.new_row(tokens=ids)
            if forced is not None:
                self.scripts.append(self._script(ids, list(forced[b])))
                root.script_sid = parser.cur.sid
                root.queue.extend(self.scripts[b].get(root.script_sid, []))
            self.prompts.append(state)
        slots = torch.arange(1, 1 + width, device=device).expand(batch, -1)
        return positions.to(device), slots

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
        kv_length = max(p.length for p in self.prompts)
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
        rows = [[] if p.done else [br for br in p.branches if br.pending] for p in self.prompts]
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        pos = np.zeros((len(rows), width), dtype=np.int64)
        slots = np.zeros((len(rows), width), dtype=np.int64)  # 0: scratch, for padding rows
        sids = np.zeros((len(rows), width), dtype=np.int64)
        for b, branches in enumerate(rows):
            state = self.prompts[b]
            for q, br in enumerate(branches):
                ids[b, q], pos[b, q], sids[b, q] = br.tokens[-1], br.positions[-1], br.stream.sid
                slots[b, q] = state.length
                br.slots.append(state.length)
                state.length += 1
                br.pending = False
        device = self.layout.segments.device
        t = [torch.from_numpy(a).to(device, non_blocking=True) for a in (ids, pos, slots, sids)]
        self.layout.segments[self.cache.batch_index, t[2]] = t[3]
        return t[0], t[1], t[2], rows

    # --- emission ------------------------------------------------------------------------------------
    def _emit(self, br: Branch, token: int, step: int):
        state, stream = self.prompts[br.prompt], br.stream
        pos = stream.next_pos
        stream.next_pos += 1
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
            child_stream = br.stream.spawn(frame, len(state.streams), label)
            state.streams.append(child_stream)
            child = Branch(stream=child_stream, prompt=state.index, parent=br, queue=deque(seed))
            if br.script_sid is not None:
                forks = self.scripts[state.index]["forks"].get(br.script_sid, [])
                sids = forks[fork_index] if fork_index < len(forks) else []
                child.script_sid = sids[k] if k < len(sids) else -1
                child.queue.extend(self.scripts[state.index].get(child.script_sid, []))
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
        row = [s.sid != 0 and compatible(stream.address, s.address) for s in state.streams[:stream.sid]] + [True]
        self.layout.add_segment(state.index, stream.sid, row)

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
        rows = [[p.root] for p in self.prompts]
        step = 0
        while True:
            step += 1
            self._emit_step(logits, rows, step)
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
        for p in self.prompts:
            p.seconds = time.perf_counter() - started
        if self.streamer is not None:
            self.streamer.end()
        return self.prompts

    def _emit_step(self, logits, rows, step: int):
        """Emit one token for every active branch: forced from its queue, else sampled from its row."""
        where = {br: (b, q) for b, branches in enumerate(rows) for q, br in enumerate(branches)}
        sample, emitted = [], []
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
        if emitted and self.sampler.presence is not None:
            self.sampler.observe([br.presence_row for br, _ in emitted],
                                 torch.tensor([t for _, t in emitted], device=logits.device))
        if sample:
            index = torch.tensor([where[br] for br in sample], device=logits.device)
            scores = logits[index[:, 0], index[:, 1]]
            rules = [self.processor.row_rules(br.stream) for br in sample]
            scores = self.processor.mask_scores(scores, rules)
            tokens = self.sampler(scores, [br.prompt for br in sample], [br.presence_row for br in sample])
            tokens = agree_tokens(tokens, self.tp_group)  # tensor parallel: every rank emits rank 0's tokens
            self.sampler.observe([br.presence_row for br in sample], tokens)
            for br, token, rule in zip(sample, tokens.tolist(), rules):  # the one host sync of the step
                emitted.append((br, token))
                self.prompts[br.prompt].events["path_budget_closed"] += rule[2]
        touched = set()
        for br, token in emitted:
            self._emit(br, token, step)
            touched.add(br.prompt)
        for b in touched:
            self.prompts[b].steps += 1
        for state in self.prompts:
            self._check_limits(state)

    def _check_limits(self, state: PromptState):
        if state.done:
            return
        if state.generated >= self.max_new_tokens:
            state.events["token_budget_exhausted"] += any(br.active for br in state.branches)
            state.done = True
        elif self.max_critical_path is not None and state.steps >= self.max_critical_path:
            state.events["critical_path_exhausted"] += 1
            state.done = True
        elif not any(br.active for br in state.branches):
            state.done = True
        if state.done:
            for br in state.branches:
                br.done = True
