"""The layout and mask against an answer key built alongside random nested structures."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiverse.modeling_multiverse import compute_layout, multiverse_mask_function
from multiverse.modeling_multiverse.masks import closure_mask, dense_mask
from multiverse.modeling_multiverse.parser import parse
from structures import TAG_IDS, build, reference_mask, stream


def materialize(layout, form="order"):
    """The mask closure on an arange grid, ANDed with causality as create_causal_mask does.

    ``form``: the layout's linear segment order [S, 2], or the S x S matrix materialized from it (the engine's
    form); the one mask function takes both."""
    seg = layout.segment_ids[None].long()
    vis = layout.order[None] if form == "order" else layout.visibility[None]
    n = seg.shape[1]
    q = torch.arange(n)[:, None]
    kv = torch.arange(n)[None, :]
    fn = multiverse_mask_function(seg, vis)
    return (kv <= q) & fn(torch.zeros((), dtype=torch.long), 0, q, kv)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)))
def test_mask_equals_reference_on_random_nested_structures(items):
    built = build(items)
    layout = compute_layout(torch.tensor(built.ids), TAG_IDS)
    expected = torch.tensor(reference_mask(built.addresses), dtype=torch.bool).reshape(len(built.ids), -1)
    assert torch.equal(materialize(layout, "order"), expected)
    assert torch.equal(materialize(layout, "matrix"), expected)
    assert layout.order.shape == (len(layout.order), 2)
    assert layout.position_ids.tolist() == built.positions
    assert parse(built.ids, TAG_IDS, strict=True).ok


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)), st.randoms(use_true_random=False))
def test_engine_grid_equals_training_grid(items, rng):
    """dense_mask (the engine's factored materialization) equals the closure, for any set of query rows."""
    built = build(items)
    layout = compute_layout(torch.tensor(built.ids), TAG_IDS)
    n = len(built.ids)
    seg = layout.segment_ids[None].long()
    rows = torch.tensor([sorted(rng.sample(range(n), min(n, 5)))])
    for vis in (layout.order[None], layout.visibility[None]):
        engine = dense_mask(seg, vis, torch.arange(n)[None], n)
        assert torch.equal(engine[0, 0], materialize(layout))
        assert torch.equal(dense_mask(seg, vis, rows, n), closure_mask(seg, vis, rows, n))


def test_padding_goes_to_the_void_segment():
    ids = torch.tensor([0, 0, 30, 31])
    layout = compute_layout(ids, TAG_IDS, attention_mask=torch.tensor([0, 0, 1, 1]))
    assert layout.segment_ids.tolist() == [0, 0, 1, 1]
    assert layout.position_ids.tolist() == [0, 0, 0, 1]
    assert not layout.visibility[0, 1] and layout.visibility[0, 0] and not layout.visibility[1, 0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)), st.booleans())
def test_engine_rows_grown_stream_by_stream_equal_the_layout(items, engine_order):
    """LayoutBuffers.add_stream (the engine's and the cached layout's visibility, one row per new stream) equals
    the layout's, whether streams open in sequence order (a parser) or fork by fork, all paths of a block at
    once (the engine: a nested block opens after every sibling of its path)."""
    from collections import deque
    from types import SimpleNamespace

    from multiverse.modeling_multiverse.kv_cache import LayoutBuffers

    built = build(items)
    result = parse(built.ids, TAG_IDS)
    layout = compute_layout(torch.tensor(built.ids), TAG_IDS)
    opened = [0, 1]  # new sid -> parser sid
    if engine_order:
        forks = deque([1])
        while forks:
            for children in result.fork_children.get(forks.popleft(), []):
                opened += children
                forks.extend(children)
    else:
        opened = list(range(len(result.streams)))
    new_sid = {old: new for new, old in enumerate(opened)}
    made = {}
    buffers = LayoutBuffers(1, 4, "cpu")
    for new, old in enumerate(opened):
        s = result.streams[old]
        forks = result.fork_children.get(s.parent.sid, []) if s.parent else []
        siblings = next((c for c in forks if old in c), [old])
        made[new] = SimpleNamespace(sid=new, parent=made[new_sid[s.parent.sid]] if s.parent else None,
                                    siblings_from=new_sid[siblings[0]])
        buffers.add_stream(0, made[new])
    back = torch.tensor([new_sid[old] for old in range(len(opened))])  # rows in the parser's sid order
    grown = buffers.visibility[0][back][:, back]
    assert torch.equal(grown, layout.visibility)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: stream(0, d)), st.randoms(use_true_random=False))
def test_the_grammars_relation_is_the_layouts_and_sees_every_stream_follows_it(items, rng):
    """structure.sees (pairwise, by address) equals the layout's visibility; sees_every_stream, asked of any
    prefix of the parse (as cached decoding asks it step by step), equals sees against every stream so far."""
    from multiverse.modeling_multiverse.parser import IncrementalParser, _id_items
    from multiverse.modeling_multiverse.visibility import sees, sees_every_stream

    built = build(items)
    result = parse(built.ids, TAG_IDS)
    visibility = compute_layout(torch.tensor(built.ids), TAG_IDS).visibility
    streams = result.streams[1:]
    for a in streams:
        for b in streams:
            assert sees(a, b) == bool(visibility[a.sid, b.sid])
    parser = IncrementalParser(False, True, "tokens", None)
    cut = rng.randrange(len(built.ids) + 1)
    for code, s, e in _id_items(built.ids[:cut], TAG_IDS):
        parser.feed(code, s, e)
        so_far = parser.streams[1:]
        for a in so_far:
            assert sees_every_stream(a) == all(sees(a, b) for b in so_far)
