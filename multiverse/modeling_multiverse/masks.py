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
    """[B, 1, Q, K] bool: causal AND visible, for query rows at ``query_slots`` [B, Q]."""
    fn = remap_queries(and_masks(causal_mask_function, multiverse_mask_function(segment_ids, visibility)),
                       query_slots)
    device = segment_ids.device
    b = torch.arange(query_slots.shape[0], device=device)[:, None, None, None]
    q = torch.arange(query_slots.shape[1], device=device)[None, None, :, None]
    kv = torch.arange(kv_length, device=device)[None, None, None, :]
    return fn(b, torch.zeros((), dtype=torch.long, device=device), q, kv)
