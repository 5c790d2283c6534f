"""The scheduler: which prompts hold a KV-cache row, which wait, which branches write this step, and the limits.

Continuous batching: the engine has ``rows`` cache rows and takes any number of prompts. An admission unit (a
prompt with its samples, or one sample of it: ``admission_units``) holds a row from its admission until it is
done; then the row is freed and the next waiting unit is admitted (prefilled into it) while the other rows keep
decoding. Admission order never changes a result: a sample's tokens, positions and steps depend only on its row.

Limits end an output row with a counted event (``budget_cuts`` closes what is open): the token budget,
the critical-path budget, a stopping criterion, and a cache row that would overflow (``kv_row_full``).
"""

import time
from collections import deque

import numpy as np
import torch

from .budget_cuts import own_closing


def unpadded_prompts(input_ids, attention_mask) -> list[list[int]]:
    """The prompts of a left-padded batch, without their padding."""
    prompts = []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(input_ids.shape[1],
                                                                                             dtype=torch.bool)
        if keep[:int((~keep).sum())].any():
            raise ValueError("parallel generate needs left-padded prompts (padding_side='left')")
        prompts.append(input_ids[b].cpu()[keep].tolist())
    return prompts


def admission_units(prompts: int, samples: int, share: bool) -> list[tuple[int, list[int]]]:
    """What one cache row takes: (prompt, its output rows). ``share``: a prompt and all its samples (its KV once,
    the row held until its last sample ends); else one sample per row (the prompt's KV once per sample, a row
    freed as soon as its sample ends). Output rows are prompt-major either way: prompt p's are p*n .. p*n+n-1."""
    if share:
        return [(p, list(range(p * samples, (p + 1) * samples))) for p in range(prompts)]
    return [(r // samples, [r]) for r in range(prompts * samples)]


class Scheduler:
    def __init__(self, units: int, rows: int, capacity: int, num_samples: int, max_new_tokens: int,
                 max_critical_path: int | None, close, pad_id: int = 0, max_live_samples: int | None = None):
        """``units`` admission units (``admission_units``) of ``num_samples`` output rows each wait for ``rows``
        cache rows."""
        self.waiting = deque(range(units))
        self.free = list(range(rows))  # cache rows; the lowest is taken first
        self.rows = {}  # cache row -> the PromptRow in it
        self.live = []  # PromptStates of admitted prompts not yet done
        self.capacity, self.n = capacity, num_samples
        self.max_new_tokens, self.max_critical_path = max_new_tokens, max_critical_path
        self.close, self.pad_id = close, pad_id  # close(state): closing tags through the grammar (tree.Trees.close)
        self.max_live = max_live_samples

    @property
    def idle(self) -> bool:
        return not self.live and not self.waiting

    def admissions(self) -> list[tuple[int, int]]:
        """(unit, cache row) for every free row while units wait, in order, as long as the output rows decoding
        stay within ``max_live_samples`` (a row held by a prompt's last sample leaves room for more)."""
        out, live = [], len(self.live)
        while self.free and self.waiting and (self.max_live is None or live + self.n <= self.max_live or not live):
            out.append((self.waiting.popleft(), self.free.pop(0)))
            live += self.n
        return out

    def admitted(self, row, states: list):
        self.rows[row.cache_row] = row
        self.live += states
        for state in states:
            state.admitted_at = time.perf_counter()

    def retire(self) -> list:
        """Drop done output rows; free the cache rows whose prompt has no sample left. Returns their PromptRows."""
        now = time.perf_counter()
        for state in self.live:
            if state.done:
                state.seconds = now - state.admitted_at
        self.live = [s for s in self.live if not s.done]
        busy = {s.row.cache_row for s in self.live}
        freed = [self.rows.pop(r) for r in list(self.rows) if r not in busy]
        self.free = sorted(self.free + [row.cache_row for row in freed])
        return freed

    def plan(self, batch: int):
        """Query rows for every token emitted last step: [B, Q] ids, positions, slots, segment ids, the branches
        per cache row and the keys to read. A prompt whose row cannot take its tokens ends (``kv_row_full``)."""
        per_row = {r: [] for r in self.rows}
        for state in self.live:  # admission order: a prompt's samples in order, each sample's branches in order
            if not state.done:
                per_row[state.row.cache_row] += [br for br in state.branches if br.pending]
        for r, branches in per_row.items():
            row = self.rows[r]
            if branches and row.length + len(branches) > self.capacity:
                for state in {id(s): s for s in self.live if s.row is row}.values():
                    self.cut(state, "kv_row_full")
                per_row[r] = []
        width = max([1] + [len(b) for b in per_row.values()])
        ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        pos, slots, sids = (np.zeros((batch, width), dtype=np.int64) for _ in range(3))
        rows = [[] for _ in range(batch)]
        for r, branches in per_row.items():
            row = self.rows[r]
            rows[r] = branches
            for q, br in enumerate(branches):
                ids[r, q], pos[r, q], sids[r, q] = br.tokens[-1], br.positions[-1], br.stream.sid
                slots[r, q] = row.length
                br.slots.append(row.length)
                row.length += 1
                br.pending = False
        kv_length = max([1] + [row.length for row in self.rows.values()])
        return ids, pos, slots, sids, rows, kv_length

    # --- limits --------------------------------------------------------------------------------------
    def check_limits(self, state):
        if state.done:
            return
        if not any(br.active for br in state.branches):
            state.done = True
        elif state.generated + state.closing >= self.max_new_tokens:
            self.cut(state, "token_budget_exhausted")
        elif self.max_critical_path is not None and state.steps >= self.max_critical_path:
            self.cut(state, "critical_path_exhausted")
        if state.done:
            for br in state.branches:
                br.done = True

    def cut(self, state, event: str):
        """A limit ends the output row: close what is open (``close``, the tree's), so it reads back as the tree."""
        state.events[event] += 1
        if any(own_closing(br.stream) for br in state.branches):
            state.events["cut"] += 1
            self.close(state)
        state.done = True
        for br in state.branches:
            br.done = True
