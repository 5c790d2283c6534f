"""The parallel decoding engine: every active branch of every admitted prompt in one forward pass per step.

A step emits the next token of every active branch, then writes those tokens (one query row per branch, into
its prompt's KV-cache row) and admits waiting prompts into freed rows. Where each part lives:

- ``scheduler``: admission (continuous batching), which branches write this step, limits and cuts;
- ``runner``: the step's tensors, the prefill, the forward, the CUDA-graph step (``decode_graphs``);
- ``tree``: the branch bookkeeping, fork at ``</Goal>`` and merge after the last ``</Path>``; ``row_tree``: a
  finished row's tree and statistics, read from that bookkeeping;
- ``seeds``: what is forced at a sample's start, a fork, a merge, and when a queue runs out (tokenizer seeds
  or a forced replay);
- ``choosing`` and ``sampling``: processors, grammar, the draw; ``budget_cuts``: ``max_new_tokens`` is exact.

Bookkeeping is plain Python; tensors live in preallocated buffers; one ``.tolist()`` per step.
"""

from collections import Counter

import torch

from .budget_cuts import growth
from .choosing import TokenChooser
from .engine_options import EngineOptions, default_batch_rows
from .generation_outputs import prompt_results
from .placement import tensor_parallel_group
from .runner import ModelRunner, StepLogits
from .sampling import BranchSampler
from .scheduler import Scheduler, admission_units, unpadded_prompts
from .seeds import ReplaySeeds
from .tags import END_PATH
from .tree import Trees


class ParallelEngine:
    def __init__(self, model, generation_config, processor, seeds, options: EngineOptions | dict):
        self.model, self.gc, self.processor, self.seeds = model, generation_config, processor, seeds
        if not isinstance(options, EngineOptions):
            options = EngineOptions.from_options(options)
        options.max_new_tokens = generation_config.max_new_tokens or 256
        options.num_samples = generation_config.num_return_sequences or 1
        self.options = options
        self.tag_ids = list(model.config.multiverse_tag_ids)
        self.position_rule = getattr(model.config, "multiverse_position_rule", "reference")
        self.code_of = {t: c for c, t in enumerate(self.tag_ids)}
        eos = generation_config.eos_token_id
        self.eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self.pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0

    # --- set-up ------------------------------------------------------------------------------------
    def _start(self, input_ids, attention_mask, forced):
        o, device = self.options, input_ids.device
        self.prompt_ids = unpadded_prompts(input_ids, attention_mask)
        if forced is not None:
            self.seeds = ReplaySeeds(self.prompt_ids, [list(c) for c in forced], self.tag_ids)
        width, prompts, n = max(len(p) for p in self.prompt_ids), len(self.prompt_ids), o.num_samples
        share = o.share_prompt_rows
        if share is None:  # own rows where they pay: prompts wait for memory, and a copy of one costs little
            shared_rows = default_batch_rows(self.model, prompts, 2 + width + n * o.max_new_tokens, device)
            share = n == 1 or width > o.max_new_tokens or o.max_batch_rows is not None or shared_rows >= prompts
        self.units = admission_units(prompts, n, share)
        self.per_row = per_row = len(self.units[0][1])  # output rows a cache row holds
        capacity = o.kv_row_slots or 1 + width + per_row * o.max_new_tokens + 1
        if capacity < 2 + width:  # checked before any prompt decodes
            raise ValueError(f"kv_row_slots={capacity} cannot hold a {width}-token prompt and a token after it")
        units = len(self.units)
        rows = min(units, o.max_batch_rows or default_batch_rows(self.model, units, capacity, device))
        self.unfinished = [n] * prompts  # output rows per prompt not yet done (on_prompt_done)
        self.runner = ModelRunner(self.model, rows, capacity, self.pad, device, o.static, o.cuda_graphs)
        self.cache = self.runner.cache
        self.sampler = BranchSampler(self.gc, prompts * o.num_samples, self.model.config.vocab_size, device, o.seed)
        self.chooser = TokenChooser(self.processor, self.sampler, o.max_new_tokens, o.min_new_tokens,
                                    o.logits_processor, o.stopping_criteria, self.pad, self.model.config.vocab_size,
                                    tensor_parallel_group(self.model))
        self.trees = Trees(self.tag_ids, self.position_rule, self.runner, self.sampler, self.seeds, o.streamer,
                           o.max_new_tokens, self.eos, o.sequential_paths)
        self.scheduler = Scheduler(units, rows, self.runner.capacity, per_row, o.max_new_tokens,
                                   o.max_critical_path, self.trees.close, self.pad, o.max_live_samples)

    def _admit(self, step: int, logits: StepLogits):
        """Prefill waiting units into free cache rows (a contiguous run of rows per forward)."""
        admitted = self.scheduler.admissions()
        while admitted:
            run = [admitted.pop(0)]
            while admitted and admitted[0][1] == run[-1][1] + 1:
                run.append(admitted.pop(0))
            units = [self.units[u] for u, _ in run]
            prompts = [self.prompt_ids[p] for p, _ in units]
            width = max(len(p) for p in prompts)
            positions = torch.stack([self.trees.admit(p, samples, ids, r, width - len(ids), step)
                                     for ((p, samples), (_, r)), ids in zip(zip(units, run), prompts)])
            out = self.runner.prefill(run[0][1], prompts, positions, width)
            for i, (p, samples) in enumerate(units):
                states = [self.trees.states[s] for s in samples]
                self.scheduler.admitted(states[0].row, states)
                logits.add(out, {s.root: (i, 0) for s in states})  # every sample starts from its prompt's row
                if self.options.streamer is not None and hasattr(self.options.streamer, "on_prompt_start"):
                    self.options.streamer.on_prompt_start(p, [s.root for s in states])

    # --- the loop ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, input_ids, attention_mask=None, forced=None):
        config = self.model.config
        impl = config._attn_implementation
        # The engine's masks are dense [B, 1, Q, K] tensors over a handful of query rows: sdpa's job. A
        # BlockMask pays off on long training sequences; flex would read a tensor mask as a score bias.
        if impl not in ("sdpa", "eager"):
            config._attn_implementation = "sdpa"
        try:
            return self._run(input_ids, attention_mask, forced)
        finally:
            config._attn_implementation = impl

    def _run(self, input_ids, attention_mask, forced):
        self._start(input_ids, attention_mask, forced)
        streamer, scheduler = self.options.streamer, self.scheduler
        logits, step = StepLogits(), 0
        self._admit(step, logits)
        while True:
            step += 1
            self._emit_step(logits, step)
            ids, pos, slots, sids, rows, kv_length = scheduler.plan(self.runner.cache.batch_index.shape[0])
            for row in scheduler.retire():
                if streamer is not None and hasattr(streamer, "on_prompt_end"):
                    streamer.on_prompt_end(row.index)
                self._prompt_done(row)
            if scheduler.idle:
                break
            logits = StepLogits()
            if any(rows):
                out = self.runner.decode(ids, pos, slots, sids, kv_length)
                if self.options.output_logits:
                    for b, branches in enumerate(rows):
                        for q, br in enumerate(branches):
                            br.logits.append(out[b, q].float().cpu())
                logits.add(out, {br: (b, q) for b, branches in enumerate(rows) for q, br in enumerate(branches)})
            self._admit(step, logits)
        if streamer is not None:
            streamer.end()
        return [self.trees.states[i] for i in range(len(self.trees.states))]

    def _prompt_done(self, row):
        """A cache row was freed: once all of its prompt's samples are done, hand them to ``on_prompt_done``."""
        n, p = self.options.num_samples, row.index
        self.unfinished[p] -= self.per_row
        if self.unfinished[p] == 0 and self.options.on_prompt_done is not None:
            self.options.on_prompt_done(p, prompt_results([self.trees.states[s] for s in range(p * n, (p + 1) * n)]))

    def _emit_step(self, logits: StepLogits, step: int):
        """Emit one token for every active branch: forced from its queue, else sampled from its logits."""
        o, states = self.options, self.trees.states
        sample, emitted, self.step_scores = [], [], {}
        for state in self.scheduler.live:
            if state.done:
                continue
            for br in [br for br in state.branches if br.active]:
                if br.queue:
                    emitted.append((br, br.queue.popleft()))
                elif self.seeds.stops_when_empty(br):
                    br.done = True  # a replay script ran out: the target stops here
                elif br not in logits:
                    raise RuntimeError(f"engine bug: branch {br.stream.label!r} has neither a forced token nor logits")
                else:
                    sample.append(br)
        if o.record_chosen:
            for br, token in emitted:  # forced: the logits in hand, if any (a path's first: its parent's)
                held = logits.get(br) if br in logits else (logits.get(br.parent) if not br.tokens else None)
                # a copy: a CUDA-graph step rewrites its logits buffer in place
                br.in_hand[len(br.tokens)] = (None if held is None else held.clone(), None)
        if emitted and self.sampler.presence is not None:
            self.sampler.observe([br.presence_row for br, _ in emitted],
                                 torch.tensor([t for _, t in emitted], device=self.sampler.device))
        if sample:
            emitting = Counter([br.sample for br, _ in emitted] + [br.sample for br in sample])
            emitted += self._choose(logits, sample, emitting)
        done = []
        for br, token in emitted:
            state = states[br.sample]
            if state.done:
                continue  # cut earlier in this step: the rest of its rows are not emitted
            code = self.code_of.get(token)
            grow = 0 if code is None else growth(br.stream, code)
            if state.generated + state.closing + 1 + grow > o.max_new_tokens:
                self.scheduler.cut(state, "token_budget_exhausted")  # fewer rows on the last step: never past it
                continue
            self.trees.emit(br, token, step - state.first_step)
            state.closing += grow
            done.append(br)
        if o.stopping_criteria is not None and done:
            device = self.runner.device
            for br, stop in zip(done, self.chooser.stops(done, self.step_scores, device)):
                if stop and not states[br.sample].done:
                    self.scheduler.cut(states[br.sample], "stopped")
        for b in {br.sample for br in done}:
            states[b].steps += 1
        for state in self.scheduler.live:
            self.trees.next_turn(state)
            self.scheduler.check_limits(state)

    def _choose(self, logits: StepLogits, sample: list, emitting: Counter) -> list:
        raw = logits.gather(sample)
        states = [self.trees.states[br.sample] for br in sample]
        tokens, scores, rules = self.chooser(raw, sample, states, emitting)
        self.step_scores = dict(zip(sample, scores))
        for i, (br, rule) in enumerate(zip(sample, rules)):
            states[i].events["path_budget_closed"] += rule[2] == END_PATH  # the path itself closes: once a path
            if self.options.record_chosen:
                br.in_hand[len(br.tokens)] = (raw[i], scores[i])
        return list(zip(sample, tokens))
