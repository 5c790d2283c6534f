"""The engine's optional static decode step, replayed from CUDA graphs (``generate(..., cuda_graphs=True)``).

An eager decode step of a 1.5B model is mostly Python and kernel launches: the GPU waits on the host.
A CUDA graph replays the whole step (mask, 28 layers, LM head) from one launch. Graphs need fixed
shapes and fixed addresses, so this step differs from the eager one in two ways only:
- it reads the whole preallocated cache (``kv_length = capacity``); slots not yet written are later than
  every query slot, so causality hides them and the mask is the one the eager step builds, only wider;
- the query width is rounded up to a power of two, the extra rows being padding rows that write and
  read the scratch slot 0, exactly as the eager step pads prompts with fewer branches.
One graph is captured per width, on first use. On a CPU (or with ``capture=False``) the same static
step runs eagerly, which is how tests/test_decode_graphs.py checks it against the eager step.

Its attention is ``decode_attention``, not sdpa: profiled on an H100 (1.5B, 4.3K cache slots), sdpa
spent 16 us per layer repeating the grouped K/V heads and, for 8 query rows under a mask, 87 us in a
flash kernel that walks the whole cache with a dozen thread blocks. A few rows are two small matmuls.
"""

import torch
from transformers import AttentionInterface

from .compat import CACHE_KWARG
from .kv_cache import BranchKVCache, LayoutBuffers
from .placement import kv_layers

DECODE_ATTENTION = "multiverse_decode"


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of a few query rows [B, H, Q, D] over the cache [B, Hkv, K, D] under a bool mask
    [B, 1, Q, K]. The query heads sharing a K/V head are folded into its rows, so K/V are read once
    and never repeated; the softmax runs in float32. Returns [B, Q, H, D] like HF's attention functions."""
    b, h, q, d = query.shape
    kv_heads, k = key.shape[1], key.shape[2]
    group = h // kv_heads
    scale = scaling if scaling is not None else d ** -0.5
    scores = torch.matmul(query.reshape(b, kv_heads, group * q, d), key.transpose(2, 3)).float() * scale
    mask = attention_mask[:, :, None, :, :k].expand(b, 1, group, q, k).reshape(b, 1, group * q, k)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(b, h, q, d)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(DECODE_ATTENTION, decode_attention)


def held_static_step(model, batch: int, capacity: int, dtype, device, pad_id: int, capture: bool):
    """Cache, layout and static step kept on the model between calls, like HF's static cache, so captured
    graphs are replayed again; rebuilt when the batch, dtype or device change or the capacity (rounded up
    to 256 slots) does not suffice. Every slot a query can see is rewritten by each call (causality hides
    later ones), so only the layout is cleared."""
    held = getattr(model, "_multiverse_static_decode", None)
    if held is not None:
        cache, layout, step = held
        if (cache.batch_index.shape[0] == batch and cache.keys[0].dtype == dtype and cache.capacity >= capacity
                and cache.batch_index.device == torch.device(device) and step.capture == capture):
            layout.segments.zero_()
            layout.visibility.zero_()
            return held
    model._multiverse_static_decode = None  # free the old buffers before allocating new ones
    capacity = -(-capacity // 256) * 256
    cache = BranchKVCache(model.config, batch, capacity, dtype, device, layers=kv_layers(model, device))
    layout = LayoutBuffers(batch, capacity, device)
    layout.reserve(64)  # room for 128 streams per prompt before a reallocation forces a re-capture
    held = (cache, layout, StaticDecodeStep(model, cache, layout, pad_id, capture))
    model._multiverse_static_decode = held
    return held


def _bucket(width: int) -> int:
    return 1 << max(0, width - 1).bit_length()


class StaticDecodeStep:
    def __init__(self, model, cache, layout, pad_id: int, capture: bool):
        self.model, self.cache, self.layout, self.pad_id, self.capture = model, cache, layout, pad_id, capture
        device = cache.batch_index.device  # the inputs' device; layers may sit elsewhere (device_map)
        if capture and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        self.device, self.batch = device, cache.keys[0].shape[0]
        self.steps = {}  # width -> (inputs dict, logits, graph or None, visibility it was captured with)

    def __call__(self, ids, positions, slots):
        """Logits [B, Q, V] for query rows written at ``slots``, like the eager ``ParallelEngine._forward``."""
        width = ids.shape[1]
        entry = self.steps.get(_bucket(width))
        # The layout reallocates visibility when branches outgrow it: a graph holding the old one is stale.
        if entry is None or entry[3] is not self.layout.visibility:
            entry = self._build(_bucket(width))
        inputs, logits, graph, _ = entry
        inputs["ids"].fill_(self.pad_id)
        inputs["positions"].zero_()
        inputs["slots"].zero_()
        inputs["ids"][:, :width].copy_(ids)
        inputs["positions"][:, :width].copy_(positions)
        inputs["slots"][:, :width].copy_(slots)
        if graph is None:
            logits = self._step(inputs)
        else:
            graph.replay()
        return logits[:, :width]

    def _step(self, inputs):
        capacity = self.cache.capacity
        self.cache.prepare(inputs["slots"], capacity)
        mask = self.layout.mask(inputs["slots"], capacity)
        config = self.model.config
        impl, config._attn_implementation = config._attn_implementation, DECODE_ATTENTION
        try:
            out = self.model(input_ids=inputs["ids"], position_ids=inputs["positions"],
                             attention_mask={"full_attention": mask}, **{CACHE_KWARG: self.cache}, use_cache=True)
        finally:
            config._attn_implementation = impl
        return out.logits

    def _build(self, width: int):
        shape = (self.batch, width)
        inputs = {"ids": torch.full(shape, self.pad_id, dtype=torch.long, device=self.device),
                  "positions": torch.zeros(shape, dtype=torch.long, device=self.device),
                  "slots": torch.zeros(shape, dtype=torch.long, device=self.device)}  # all scratch: harmless
        graph, logits = None, None
        if self.capture:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up outside the graph (cuBLAS handles, lazy inits)
                    self._step(inputs)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._step(inputs)
        entry = (inputs, logits, graph, self.layout.visibility)
        self.steps[width] = entry
        return entry
