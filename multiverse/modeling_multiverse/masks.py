"""The one Multiverse mask function, in the attention-gym style: a closure that only indexes tensors.

``create_causal_mask(..., and_mask_function=multiverse_mask_function(...))`` ANDs it with causality
and padding and turns it into a bool tensor (sdpa), an additive float tensor (eager) or a
``BlockMask`` (flex_attention). The engine materializes the same closure on its own index grid.
"""

import torch
from transformers.masking_utils import and_masks, causal_mask_function


def multiverse_mask_function(segment_ids: torch.Tensor, visibility: torch.Tensor):
    """``(b, h, q_idx, kv_idx) -> bool``: the key's segment is visible from the query's segment.

    ``segment_ids`` is [B, L] over key indices, ``visibility`` is [B, S, S].
    """

    def multiverse_mask(batch_idx, head_idx, q_idx, kv_idx):
        return visibility[batch_idx, segment_ids[batch_idx, q_idx], segment_ids[batch_idx, kv_idx]]

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
    rows = visibility[batch, segment_ids[batch, query_slots]]  # [B, Q, S]
    keys = segment_ids[:, :kv_length].unsqueeze(1).expand(-1, query_slots.shape[1], -1)
    visible = rows.gather(2, keys)
    causal = torch.arange(kv_length, device=segment_ids.device)[None, None, :] <= query_slots[:, :, None]
    return (visible & causal)[:, None]


def closure_mask(segment_ids, visibility, query_slots, kv_length: int) -> torch.Tensor:
    """The same mask by evaluating the closure itself on a broadcast grid (the reference for dense_mask)."""
    fn = remap_queries(and_masks(causal_mask_function, multiverse_mask_function(segment_ids, visibility)),
                       query_slots)
    device = segment_ids.device
    b = torch.arange(query_slots.shape[0], device=device)[:, None, None, None]
    q = torch.arange(query_slots.shape[1], device=device)[None, None, :, None]
    kv = torch.arange(kv_length, device=device)[None, None, None, :]
    return fn(b, torch.zeros((), dtype=torch.long, device=device), q, kv)
