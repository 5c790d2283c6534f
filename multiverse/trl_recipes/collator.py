"""The Multiverse training collator: token ids in, compact structure tensors out.

It emits ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``, ``mv_segment_ids`` [B, L] and
``mv_visibility`` [B, S, 2] (the segments' order, ``layout.segment_order``: linear in the number of segments;
``masks.visibility_from_order`` gives the S x S matrix). The backbone (``MultiverseModel``) turns the last two
into the attention mask: a FlexAttention ``BlockMask`` on CUDA, so no L x L tensor exists anywhere in training
(sdpa, for CPU tests, builds a dense bool mask inside the model).

Everything comes from ``input_ids`` (and the labels), so the collator works with TRL's default
``remove_unused_columns=True``, and unknown columns are ignored when it is ``False``.

Truncation happens *before* the layout is computed: the layout of a prefix is the prefix of the layout
(a token's segment and position depend only on the tokens before it), so a sequence cut mid-structure
keeps every column aligned and still trains, with the open paths simply never closed.
The work is done in numpy and wrapped with ``torch.from_numpy`` at the end, so it costs no copies.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..modeling_multiverse.layout import layout_from_parse
from ..modeling_multiverse.parser import VOID_SID, parse
from ..modeling_multiverse.structure import POSITION_RULES, REFERENCE

IGNORE_INDEX = -100


def _as_ids(value, name: str, index: int) -> np.ndarray:
    if isinstance(value, str):
        raise ValueError(f"example {index}: {name} must be token ids, got a string; tokenize the dataset first")
    arr = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"example {index}: {name} must be one sequence of token ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"example {index}: {name} must be integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


@dataclass
class MultiverseDataCollator:
    """Pad, truncate and lay out a batch of tokenized examples for ``MultiverseModel``.

    Args:
        tag_ids: the 12 tag ids (``config.multiverse_tag_ids``).
        pad_token_id: id written into padding (it is masked out, so any id works).
        max_length: cut longer examples to this many tokens (keep the start), or ``None``.
        pad_to_multiple_of: round the padded length up, e.g. to 128 for flex_attention's block size.
        position_rule: how positions are laid out (``config.multiverse_position_rule``): train with the rule
            the model will decode with.

    Each example is a dict with ``input_ids`` and either ``labels`` (-100 where no loss, as TRL prepares
    them), or ``completion_mask`` (1 on completion tokens), or neither (loss on every token).
    """

    tag_ids: Sequence[int]
    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    position_rule: str = REFERENCE

    def __post_init__(self):
        self.tag_ids = [int(t) for t in self.tag_ids]
        if len(self.tag_ids) != 12 or len(set(self.tag_ids)) != 12:
            raise ValueError(f"tag_ids={self.tag_ids}: needs the 12 distinct tag ids in TAGS order "
                             "(config.multiverse_tag_ids)")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length={self.max_length}: must be positive, or None for no truncation")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={self.pad_to_multiple_of}: must be positive or None")
        if self.position_rule not in POSITION_RULES:
            raise ValueError(f"position_rule={self.position_rule!r}: must be one of {POSITION_RULES} "
                             "(config.multiverse_position_rule)")

    def _example(self, example, index: int):
        if "input_ids" not in example:
            raise ValueError(f"example {index} has no input_ids (keys: {sorted(example)}); tokenize the dataset "
                             "first, as SFTTrainer does")
        ids = _as_ids(example["input_ids"], "input_ids", index)
        if not ids.size:
            raise ValueError(f"example {index} has no tokens")
        if example.get("labels") is not None:
            labels = _as_ids(example["labels"], "labels", index)
        elif example.get("completion_mask") is not None:
            mask = _as_ids(example["completion_mask"], "completion_mask", index)
            if len(mask) != len(ids):
                raise ValueError(f"example {index}: completion_mask has {len(mask)} entries for {len(ids)} tokens")
            labels = np.where(mask != 0, ids, IGNORE_INDEX)
        else:
            labels = ids
        if len(labels) != len(ids):
            raise ValueError(f"example {index}: {len(labels)} labels for {len(ids)} input_ids")
        if self.max_length is not None:
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        return ids, labels

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("MultiverseDataCollator got an empty batch")
        rows = [self._example(example, i) for i, example in enumerate(examples)]
        length = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = np.full((batch, length), self.pad_token_id, dtype=np.int64)
        labels = np.full((batch, length), IGNORE_INDEX, dtype=np.int64)
        attention_mask = np.zeros((batch, length), dtype=np.int64)
        segment_ids = np.full((batch, length), VOID_SID, dtype=np.int32)  # padding lives in the void segment
        position_ids = np.zeros((batch, length), dtype=np.int64)
        orders = []
        for b, (ids, lab) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n] = ids
            labels[b, :n] = lab
            attention_mask[b, :n] = 1
            # Tolerant parse: model-written or truncated structure is laid out, never rejected.
            layout = layout_from_parse(parse(ids, self.tag_ids, position_rule=self.position_rule))
            segment_ids[b, :n] = layout.segment_ids.numpy()
            position_ids[b, :n] = layout.position_ids.numpy()
            orders.append(layout.order.numpy())
        # Rows past a sequence's own segments belong to no token, so they are never read.
        visibility = np.zeros((batch, max(len(o) for o in orders), 2), dtype=np.int64)
        for b, order in enumerate(orders):
            visibility[b, :len(order)] = order
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
            "mv_segment_ids": torch.from_numpy(segment_ids),
            "mv_visibility": torch.from_numpy(visibility),
        }
