"""The layout: segment ids, segment visibility and position ids, from one parse.

A segment is a stream (``structure.Stream``): the root, or one path. Segment 0 is the void, for
padding and scratch rows; it sees only itself, so no query row is ever fully masked.
Positions follow the reference training code: every path of a block starts at
``pos(</Goal>) + 1`` and the conclusion at ``pos(</Goal>) + longest path + 1``.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .parser import VOID_SID, ParseResult, parse


@dataclass
class Layout:
    segment_ids: torch.Tensor  # [L] int32
    visibility: torch.Tensor  # [S, S] bool, symmetric; causality is applied separately
    position_ids: torch.Tensor  # [L] int64


def visibility_matrix(addresses: list) -> np.ndarray:
    """[S, S] bool from stream addresses; index 0 is the void segment."""
    n = len(addresses)
    vis = np.zeros((n, n), dtype=bool)
    vis[0, 0] = True
    # Start from "all real segments see each other", then cut sibling paths block by block.
    vis[1:, 1:] = True
    members: dict = {}
    for sid, address in enumerate(addresses):
        if sid == VOID_SID:
            continue
        for block, path in address:
            members.setdefault(block, {}).setdefault(path, []).append(sid)
    for paths in members.values():
        groups = [np.asarray(g) for g in paths.values()]
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                vis[np.ix_(a, b)] = False
                vis[np.ix_(b, a)] = False
    return vis


def layout_from_parse(result: ParseResult, offset: int = 0, total: int | None = None) -> Layout:
    """Expand a parse's runs into per-token tensors, placed at ``offset`` in a row of ``total``."""
    total = result.length + offset if total is None else total
    segment_ids = np.zeros(total, dtype=np.int32)
    position_ids = np.zeros(total, dtype=np.int64)
    if result.runs:
        runs = np.asarray(result.runs, dtype=np.int64)
        starts, ends, sids, start_pos = runs.T
        lengths = ends - starts
        segment_ids[offset:offset + result.length] = np.repeat(sids, lengths)
        position_ids[offset:offset + result.length] = np.repeat(start_pos - starts, lengths) + np.arange(result.length)
    vis = visibility_matrix([s.address if s.sid != VOID_SID else None for s in result.streams])
    return Layout(torch.from_numpy(segment_ids), torch.from_numpy(vis), torch.from_numpy(position_ids))


def compute_layout(input_ids, tag_ids, attention_mask=None) -> Layout:
    """Layout of one sequence of token ids; tokens where ``attention_mask`` is 0 go to the void."""
    ids = torch.as_tensor(input_ids)
    if attention_mask is None:
        return layout_from_parse(parse(ids.tolist(), tag_ids))
    keep = torch.as_tensor(attention_mask).bool()
    idx = keep.nonzero().flatten()
    if len(idx) == 0:
        return layout_from_parse(parse([], tag_ids), total=len(ids))
    first, last = int(idx[0]), int(idx[-1]) + 1
    if int(keep[first:last].sum()) != last - first:
        raise ValueError("attention_mask must mark one contiguous run of real tokens per row (left or right padding)")
    return layout_from_parse(parse(ids[first:last].tolist(), tag_ids), offset=first, total=len(ids))


def batch_layouts(layouts: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack layouts of equal length: segment ids [B, L], visibility [B, S, S] padded, positions [B, L]."""
    s_max = max(lay.visibility.shape[0] for lay in layouts)
    vis = torch.zeros(len(layouts), s_max, s_max, dtype=torch.bool)
    for b, lay in enumerate(layouts):
        n = lay.visibility.shape[0]
        vis[b, :n, :n] = lay.visibility
    return (torch.stack([lay.segment_ids for lay in layouts]), vis,
            torch.stack([lay.position_ids for lay in layouts]))

