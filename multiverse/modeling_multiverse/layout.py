"""The layout: segment ids, segment visibility and position ids, from one parse.

A segment is a stream (``structure.Stream``): the root, or one path. Segment 0 is the void, for
padding and scratch rows; it sees only itself, so no query row is ever fully masked.
Positions are the parser's (``Stream.place``, under the model's ``multiverse_position_rule``).

Visibility is kept linear in the number of segments: two ranks per segment (``segment_order``), from
which ``masks`` decides any pair with two comparisons. An S x S matrix (``Layout.visibility``) is only
materialized for consumers that want one and have few segments.
"""

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .masks import visibility_from_order
from .parser import ROOT_SID, VOID_SID, ParseResult, parse
from .structure import REFERENCE


@dataclass
class Layout:
    segment_ids: torch.Tensor  # [L] int32
    order: torch.Tensor  # [S, 2] int64, see segment_order; symmetric visibility, causality applied separately
    position_ids: torch.Tensor  # [L] int64

    @property
    def visibility(self) -> torch.Tensor:
        """[S, S] bool, materialized from ``order`` (S^2 memory: for few segments only)."""
        return visibility_from_order(self.order)


def segment_order(n_streams: int, fork_children: dict) -> np.ndarray:
    """[S, 2] int64: each segment's rank in two depth-first orders of the stream tree.

    Both visit a stream before its branches and the blocks of a stream in sequence order; the first visits
    the paths of a block in order, the second in reverse. Two streams then see each other iff both orders
    agree on which comes first: a pair in different paths of one block is exactly a pair the reversal swaps
    (an ancestor precedes in both; streams under different blocks keep their blocks' order in both).
    The void gets rank 0 in the first order and the last rank in the second, so it sees only itself.
    Iterative, O(S): no recursion however deep the nesting.
    """
    order = np.zeros((n_streams, 2), dtype=np.int64)
    order[VOID_SID] = (0, n_streams)
    if n_streams <= ROOT_SID:
        return order
    for column, reverse in ((0, False), (1, True)):
        rank = 1 - column  # ranks 1.. in the first order, 0.. in the second: the void is outside both
        stack = [ROOT_SID]
        while stack:
            sid = stack.pop()
            order[sid, column] = rank
            rank += 1
            # Pushed last = visited first: blocks in reverse, and their paths in reverse unless ``reverse``.
            for children in reversed(fork_children.get(sid, ())):
                stack.extend(children if reverse else children[::-1])
    return order


def layout_from_parse(result: ParseResult, offset: int = 0, total: int | None = None) -> Layout:
    """Expand a parse's runs into per-token tensors, placed at ``offset`` in a row of ``total``."""
    total = result.length + offset if total is None else total
    segment_ids = np.zeros(total, dtype=np.int32)
    position_ids = np.zeros(total, dtype=np.int64)
    if result.runs:
        flat = itertools.chain.from_iterable(result.runs)  # faster than np.asarray over a list of tuples
        runs = np.fromiter(flat, dtype=np.int64, count=4 * len(result.runs)).reshape(-1, 4)
        starts, ends, sids, start_pos = runs.T
        lengths = ends - starts
        segment_ids[offset:offset + result.length] = np.repeat(sids, lengths)
        position_ids[offset:offset + result.length] = np.repeat(start_pos - starts, lengths) + np.arange(result.length)
    order = segment_order(len(result.streams), result.fork_children)
    return Layout(torch.from_numpy(segment_ids), torch.from_numpy(order), torch.from_numpy(position_ids))


def compute_layout(input_ids, tag_ids, attention_mask=None, position_rule: str = REFERENCE) -> Layout:
    """Layout of one sequence of token ids; tokens where ``attention_mask`` is 0 go to the void.

    ``position_rule``: ``config.multiverse_position_rule`` (one of ``structure.POSITION_RULES``).
    """
    ids = torch.as_tensor(input_ids)
    if attention_mask is None:
        return layout_from_parse(parse(ids.tolist(), tag_ids, position_rule=position_rule))
    keep = torch.as_tensor(attention_mask).bool()
    idx = keep.nonzero().flatten()
    if len(idx) == 0:
        return layout_from_parse(parse([], tag_ids, position_rule=position_rule), total=len(ids))
    first, last = int(idx[0]), int(idx[-1]) + 1
    if int(keep[first:last].sum()) != last - first:
        raise ValueError("attention_mask must mark one contiguous run of real tokens per row (left or right padding)")
    return layout_from_parse(parse(ids[first:last].tolist(), tag_ids, position_rule=position_rule),
                             offset=first, total=len(ids))


def batch_layouts(layouts: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack layouts of equal length: segment ids [B, L], segment order [B, S, 2] padded, positions [B, L].

    The order is what ``masks`` takes as ``visibility``; padded rows belong to no segment and are never read.
    """
    s_max = max(lay.order.shape[0] for lay in layouts)
    order = torch.zeros(len(layouts), s_max, 2, dtype=torch.int64)
    for b, lay in enumerate(layouts):
        order[b, :lay.order.shape[0]] = lay.order
    return (torch.stack([lay.segment_ids for lay in layouts]), order,
            torch.stack([lay.position_ids for lay in layouts]))
