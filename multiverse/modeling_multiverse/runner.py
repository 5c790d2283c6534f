"""The model runner: the tensors of a step and the forward over them.

It holds the preallocated KV cache and layout (``kv_cache``), prefills admitted prompts into their cache rows,
and runs a decode step over the query rows the scheduler planned: eager, or the static step that CUDA graphs
replay (``decode_graphs``). Nothing here knows about branches beyond the (cache row, query row) of each.
"""

import contextlib

import numpy as np
import torch

from .compat import CACHE_KWARG
from .decode_graphs import held_static_step
from .kv_cache import BranchKVCache, LayoutBuffers
from .masks import additive_mask, dense_mask
from .parser import ROOT_SID
from .placement import PerDeviceInputs, kv_layers


class StepLogits:
    """Where the logits of each branch are this step: rows of one or more forward outputs [b, q, V]."""

    def __init__(self):
        self.at = {}  # branch -> (output, b, q)

    def add(self, logits, placement: dict):
        for br, (b, q) in placement.items():
            self.at[br] = (logits, b, q)

    def __contains__(self, br) -> bool:
        return br in self.at

    def get(self, br):
        held = self.at.get(br)
        return None if held is None else held[0][held[1], held[2]]

    @property
    def device(self):
        return next(iter(self.at.values()))[0].device

    def gather(self, branches: list) -> torch.Tensor:
        """[R, V] logits of ``branches``: one gather per forward output (usually one)."""
        outputs = {}
        for i, br in enumerate(branches):
            out, b, q = self.at[br]
            outputs.setdefault(id(out), (out, []))[1].append((i, b, q))
        if len(outputs) == 1:
            out, rows = next(iter(outputs.values()))
            index = torch.tensor([(b, q) for _, b, q in rows], device=out.device)
            return out[index[:, 0], index[:, 1]]
        parts, order = [], []
        for out, rows in outputs.values():
            index = torch.tensor([(b, q) for _, b, q in rows], device=out.device)
            parts.append(out[index[:, 0], index[:, 1]])
            order += [i for i, _, _ in rows]
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(parts)[inverse.to(parts[0].device)]


class ModelRunner:
    def __init__(self, model, rows: int, capacity: int, pad_id: int, device, static: bool, cuda_graphs: bool):
        self.model, self.pad_id, self.device = model, pad_id, device
        dtype = next(model.parameters()).dtype
        if static:
            self.cache, self.layout, self.decode_step = held_static_step(model, rows, capacity, dtype, device, pad_id,
                                                                         cuda_graphs)
        else:
            layers = kv_layers(model, device)
            self.cache = BranchKVCache(model.config, rows, capacity, dtype, device, layers=layers)
            self.layout = LayoutBuffers(rows, capacity, device)
            self.decode_step = None
        self.capacity = self.cache.capacity  # the static step rounds it up
        # Rows that hold no prompt yet still run padding queries on their scratch slot: it must see itself (a fully
        # masked sdpa row is NaN, and NaN written to the cache leaks through zero attention weights).
        self.layout.visibility[:, 0, 0] = True

    def forward(self, input_ids, position_ids, slots, kv_length: int, keep_last: bool, rows: slice = slice(None),
                causal: bool = False):
        """Logits of query rows written at ``slots`` of cache ``rows``, reading keys [0, kv_length).

        ``causal``: the rows are a prefill whose every token sees every earlier one and nothing else (slots
        1..kv_length - 1 of one segment): keys skip the scratch slot and sdpa runs its causal kernel, no mask
        (2.6x faster on a 2K prompt than the same mask spelled out)."""
        self.cache.prepare(slots, kv_length, rows, first_key=1 if causal else 0)
        if causal:
            mask = None
        else:
            mask = dense_mask(self.layout.segments[rows, :kv_length], self.layout.visibility[rows], slots, kv_length)
            mask = additive_mask(mask, self.cache.keys[0].dtype)
        with self._spread():
            out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask={"full_attention": mask},
                             **{CACHE_KWARG: self.cache}, use_cache=True, logits_to_keep=1 if keep_last else 0)
        return out.logits

    def _spread(self):
        """Layers on several devices: the mask and rotary tables reach each device once per step."""
        devices = getattr(self.cache, "layer_devices", None)
        if devices is None or len(set(devices)) < 2:
            return contextlib.nullcontext()
        return PerDeviceInputs(self.model.model.layers, devices)

    def clear_row(self, row: int):
        """A freed row's visibility; its segments are rewritten whole by the next prefill."""
        self.layout.visibility[row].zero_()
        self.layout.visibility[row, 0, 0] = True

    def set_layout(self, row: int, layout):
        self.layout.segments[row] = layout.segment_ids.to(self.device)
        self.layout.set_visibility(row, layout.visibility)

    def prefill(self, first_row: int, prompts: list, positions: torch.Tensor, width: int):
        """Left-padded prompts of cache rows ``first_row ..`` written at slots 1..width; logits [b, 1, V]."""
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        for b, p in enumerate(prompts):
            if p:
                ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
        slots = torch.arange(1, 1 + width, device=self.device).expand(len(prompts), -1)
        rows = slice(first_row, first_row + len(prompts))
        # No padding and no block in any prompt: plain causal attention (eager attention has no causal default)
        causal = (self.model.config._attn_implementation == "sdpa" and all(len(p) == width for p in prompts)
                  and bool((self.layout.segments[rows, 1:1 + width] == ROOT_SID).all()))
        return self.forward(ids.to(self.device), positions.to(self.device), slots, 1 + width, True, rows, causal)

    def decode(self, ids: np.ndarray, pos: np.ndarray, slots: np.ndarray, sids: np.ndarray, kv_length: int):
        """Logits [B, Q, V] of the tokens emitted last step, written at ``slots`` (segment ``sids``)."""
        t = [torch.from_numpy(a).to(self.device, non_blocking=True) for a in (ids, pos, slots, sids)]
        self.layout.segments[self.cache.batch_index, t[2]] = t[3]
        if self.decode_step is not None:
            return self.decode_step(t[0], t[1], t[2])
        return self.forward(t[0], t[1], t[2], kv_length, keep_last=False)
