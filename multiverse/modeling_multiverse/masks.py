"""The one Multiverse mask function, in the attention-gym style: a closure that only indexes tensors.

``create_causal_mask(..., and_mask_function=multiverse_mask_function(...))`` ANDs it with causality
and padding and turns it into a bool tensor (sdpa), an additive float tensor (eager) or a
``BlockMask`` (flex_attention). The engine materializes the same closure on its own index grid.

Segment visibility comes in one of two forms, told apart by dtype, and every function here takes both:
- *order* [B, S, 2] integers (``layout.segment_order``): two ranks per segment, linear in S. Segments a and b
  see each other iff both ranks order them the same way. The parser's layout and the collator use it.
- *matrix* [B, S, S] bool: the engine's, grown a row per branch as branches open (few segments per prompt).
"""

import torch
from transformers.masking_utils import and_masks, causal_mask_function


def segment_visibility(visibility: torch.Tensor):
    """``(batch_idx, seg_q, seg_k) -> bool`` over broadcastable index tensors, for either form: indexing only.

    The two ranks are split into [B, S] tensors here, outside the closure: vmap (create_block_mask) cannot
    index a batched tensor together with a constant last index.
    """
    if visibility.dtype == torch.bool:
        return lambda batch_idx, seg_q, seg_k: visibility[batch_idx, seg_q, seg_k]
    first, second = visibility[..., 0].contiguous(), visibility[..., 1].contiguous()

    def visible(batch_idx, seg_q, seg_k):
        in_first = first[batch_idx, seg_q] <= first[batch_idx, seg_k]
        return in_first == (second[batch_idx, seg_q] <= second[batch_idx, seg_k])

    return visible


def visibility_from_order(order: torch.Tensor) -> torch.Tensor:
    """[..., S, S] bool matrix from [..., S, 2] order (a matrix is returned as it is)."""
    if order.dtype == torch.bool:
        return order
    first = order[..., :, None, 0] <= order[..., None, :, 0]
    second = order[..., :, None, 1] <= order[..., None, :, 1]
    return first == second


def multiverse_mask_function(segment_ids: torch.Tensor, visibility: torch.Tensor):
    """``(b, h, q_idx, kv_idx) -> bool``: the key's segment is visible from the query's segment.

    ``segment_ids`` is [B, L] over key indices, ``visibility`` is [B, S, 2] order or a [B, S, S] matrix.
    """

    visible = segment_visibility(visibility)

    def multiverse_mask(batch_idx, head_idx, q_idx, kv_idx):
        return visible(batch_idx, segment_ids[batch_idx, q_idx], segment_ids[batch_idx, kv_idx])

    return multiverse_mask


def remap_queries(mask_function, query_slots: torch.Tensor):
    """Read query row ``q`` of batch ``b`` as key slot ``query_slots[b, q]``.

    The engine decodes several branches per prompt in one step, each writing its own cache slot, so a
    query's index in the step is not its index in the cache.
    """

    def remapped(batch_idx, head_idx, q_idx, kv_idx):
        return mask_function(batch_idx, head_idx, query_slots[batch_idx, q_idx], kv_idx)

    return remapped


def dense_mask(segment_ids, visibility, query_slots, kv_length: int) -> torch.Tensor:
    """[B, 1, Q, K] bool: ``causal AND multiverse_mask_function`` for query rows at ``query_slots`` [B, Q].

    This is the closure evaluated on the engine's grid, factored for speed: one visibility row per query,
    then a gather over the keys' segments. Evaluating the closure on a broadcast grid would build three
    B x Q x K index tensors every decode step. tests/test_layout_mask.py checks the two are equal.
    """
    batch = torch.arange(query_slots.shape[0], device=segment_ids.device)[:, None]
    seg_q = segment_ids[batch, query_slots]  # [B, Q]
    if visibility.dtype == torch.bool:
        rows = visibility[batch, seg_q]  # [B, Q, S]
        keys = segment_ids[:, :kv_length].unsqueeze(1).expand(-1, query_slots.shape[1], -1)
        seen = rows.gather(2, keys)
    else:
        seen = segment_visibility(visibility)(batch[:, :, None], seg_q[:, :, None], segment_ids[:, None, :kv_length])
    causal = torch.arange(kv_length, device=segment_ids.device)[None, None, :] <= query_slots[:, :, None]
    return (seen & causal)[:, None]


def additive_mask(mask: torch.Tensor, dtype) -> torch.Tensor:
    """A bool mask as the additive float mask eager attention takes (0 where seen, the dtype's min elsewhere).

    The engine hands sdpa this form too: on a CPU, sdpa converts a bool mask in every layer, and its masked kernel
    reads a float one faster (tiny shape, 8 rows over 4.2K keys: 0.17 against 0.29 ms a layer)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def closure_mask(segment_ids, visibility, query_slots, kv_length: int) -> torch.Tensor:
    """The same mask by evaluating the closure itself on a broadcast grid (the reference for dense_mask)."""
    fn = remap_queries(and_masks(causal_mask_function, multiverse_mask_function(segment_ids, visibility)),
                       query_slots)
    device = segment_ids.device
    b = torch.arange(query_slots.shape[0], device=device)[:, None, None, None]
    q = torch.arange(query_slots.shape[1], device=device)[None, None, :, None]
    kv = torch.arange(kv_length, device=device)[None, None, None, :]
    return fn(b, torch.zeros((), dtype=torch.long, device=device), q, kv)
