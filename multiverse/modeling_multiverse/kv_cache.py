"""Preallocated device state of the engine: the KV cache and the layout of what it holds.

The KV cache has one write slot per query row, so branches share one cache per prompt.

Forking copies nothing: a new branch's tokens are written to the next free slots of its prompt's row,
and the mask decides who sees them. Slot 0 of every row is scratch: padding query rows write and read
it, so no row is ever fully masked (a fully masked sdpa row is NaN, and NaN values leak through zero
attention weights).

It is duck-typed rather than a ``transformers.Cache`` subclass: Qwen2 attention only calls
``update``, and the Cache base class API moves between transformers releases.
"""

import torch

from .masks import dense_mask


class BranchKVCache:
    SCRATCH = 0

    def __init__(self, config, batch_size: int, capacity: int, dtype, device, layers=None):
        # ``layers``: (kv heads, head dim, device) per layer as the model holds them (placement.kv_layers): a
        # tensor-parallel rank holds a share of the heads, and a device_map puts layers on several devices.
        if layers is None:
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            layers = [(config.num_key_value_heads, head_dim, device)] * config.num_hidden_layers
        self.keys = [torch.zeros(batch_size, h, capacity, d, dtype=dtype, device=dev) for h, d, dev in layers]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.layer_devices = [k.device for k in self.keys]  # the layer -> device table
        self.capacity = capacity
        self.batch_index = torch.arange(batch_size, device=device)[:, None]
        self._batch_index = {dev: self.batch_index.to(dev) for dev in set(self.layer_devices)}
        self.write_slots = None  # [B, Q] slots of this step's query rows
        self._write_slots = {}  # the same, on each layer device: moved once per step and device, not per layer
        self.kv_length, self.first_key = 0, 0  # keys [first_key, kv_length) are read this step

    def prepare(self, write_slots: torch.Tensor, kv_length: int, rows: slice = slice(None), first_key: int = 0):
        """This step's query rows write at ``write_slots`` and read keys [first_key, kv_length) of cache ``rows``
        (a range: a prompt admitted into a freed row is prefilled alone while the other rows keep their cache;
        ``first_key`` 1 skips the scratch slot, for a causal prefill)."""
        if kv_length > self.capacity:
            raise RuntimeError(f"KV cache full: {kv_length} slots needed, {self.capacity} allocated")
        self.write_slots, self.kv_length, self.rows, self.first_key = write_slots, kv_length, rows, first_key
        self._write_slots = {dev: write_slots.to(dev) for dev in self._batch_index}
        n = write_slots.shape[0]
        self._rows_index = {dev: index[:n] for dev, index in self._batch_index.items()}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        # [B, H, Q, D] -> rows written at (b, :, write_slots[b, q])
        device = self.layer_devices[layer_idx]
        batch_index, slots = self._rows_index[device], self._write_slots[device]
        keys, values = self.keys[layer_idx][self.rows], self.values[layer_idx][self.rows]  # views: a range
        keys[batch_index, :, slots] = key_states.transpose(1, 2)
        values[batch_index, :, slots] = value_states.transpose(1, 2)
        return keys[:, :, self.first_key:self.kv_length], values[:, :, self.first_key:self.kv_length]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_length


class LayoutBuffers:
    """Segment id of every cache slot and the segments' visibility, per prompt: the engine's layout.

    Visibility grows (doubling) as branches open; it is symmetric, and causality comes from slot order.
    """

    def __init__(self, batch_size: int, capacity: int, device):
        self.segments = torch.zeros(batch_size, capacity, dtype=torch.long, device=device)
        self.visibility = torch.zeros(batch_size, 16, 16, dtype=torch.bool, device=device)

    def reserve(self, n: int):
        if n > self.visibility.shape[1]:
            old = self.visibility.shape[1]
            grown = torch.zeros(self.visibility.shape[0], 2 * n, 2 * n, dtype=torch.bool,
                                device=self.visibility.device)
            grown[:, :old, :old] = self.visibility
            self.visibility = grown

    def set_visibility(self, b: int, matrix):
        n = matrix.shape[0]
        self.reserve(n)
        self.visibility[b, :n, :n] = torch.as_tensor(matrix, device=self.visibility.device)

    def add_segment(self, b: int, sid: int, row: list):
        """Segment ``sid`` of prompt ``b`` sees (and is seen by) segments 0..sid as ``row`` says."""
        self.reserve(sid + 1)
        row = torch.tensor(row, dtype=torch.bool, device=self.visibility.device)
        self.visibility[b, sid, :sid + 1] = row
        self.visibility[b, :sid + 1, sid] = row

    def add_stream(self, b: int, stream):
        """Visibility of a newly opened ``structure.Stream``: what its parent sees, but not its earlier siblings
        (the streams opened since its block's first path, ``Stream.siblings_from``). O(S) tensor work per stream,
        no loop over the streams; the parent's row must be written already."""
        sid = stream.sid
        self.reserve(sid + 1)
        row = torch.zeros(sid + 1, dtype=torch.bool, device=self.visibility.device)
        if stream.parent is not None:
            row[:sid] = self.visibility[b, stream.parent.sid, :sid]
            row[stream.siblings_from:sid] = False
        row[sid] = True
        self.visibility[b, sid, :sid + 1] = row
        self.visibility[b, :sid + 1, sid] = row

    def add_sample(self, b: int, sid: int, prompt_sid: int, first_sample_sid: int):
        """Visibility of a sample's own root segment (``num_return_sequences``): what the prompt's stream sees,
        but none of the other samples of the prompt (segments from ``first_sample_sid`` on), as if the samples
        were paths of a block opened over the prompt."""
        self.reserve(sid + 1)
        row = torch.zeros(sid + 1, dtype=torch.bool, device=self.visibility.device)
        row[:first_sample_sid] = self.visibility[b, prompt_sid, :first_sample_sid]
        row[sid] = True
        self.visibility[b, sid, :sid + 1] = row
        self.visibility[b, :sid + 1, sid] = row

    def mask(self, query_slots, kv_length: int):
        return dense_mask(self.segments[:, :kv_length], self.visibility, query_slots, kv_length)
