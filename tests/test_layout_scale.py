"""The layout at scale and depth: memory linear in the number of segments, nothing recursive on nesting depth.

Bounds are on memory (tracemalloc, deterministic) and on structure, never on wall-clock time.
benchmarks/layout_scale.py prints the full-size figures (a block of 2000 paths, 10 MB of small blocks).
"""

import sys
import tracemalloc

import torch

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.generation.tree_view import branch_tree
from multiverse.modeling_multiverse import compute_layout
from multiverse.modeling_multiverse.layout import layout_from_parse
from multiverse.modeling_multiverse.parser import parse
from structures import END_GOAL, END_OUTLINE, END_PATH, GOAL, NL, OUTLINE, PARALLEL, PATH, TAG_IDS, build, \
    reference_mask

DEPTH = 400  # past the ~330 levels that crashed generate, and past Python's default recursion limit / 2


def one_block(n_paths: int) -> list:
    ids = [20, PARALLEL, GOAL] + [OUTLINE, 21, END_OUTLINE] * n_paths + [END_GOAL]
    for _ in range(n_paths):
        ids += [NL, PATH, 21, 30, 31, 32, END_PATH]
    return ids


def traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_layout_memory_is_linear_in_the_number_of_paths():
    """4x the paths, ~4x the memory: an S x S matrix (what the layout held before) would make it 16x, and at
    8000 paths alone 64 MB."""
    small, large = (traced_peak(lambda n=n: compute_layout(torch.tensor(one_block(n)), TAG_IDS)) for n in (2000, 8000))
    assert large < 6 * small
    assert large < 500 * len(one_block(8000))  # bytes per token (~160 now); an 8000 x 8000 matrix alone is 800
    ids = torch.tensor(one_block(8000))
    layout = compute_layout(ids, TAG_IDS)
    assert layout.order.shape == (8002, 2)
    paths = layout.segment_ids[ids == PATH].tolist()
    vis = layout.visibility  # materialized here only to check a few pairs
    assert not vis[paths[0], paths[-1]] and not vis[paths[10], paths[11]] and vis[paths[5], 1]


def nested_text(depth: int) -> str:
    """One path per block, ``depth`` blocks deep; labels grow as "1.1.1...", longer than 64 characters."""
    head, tail = [], []
    label = ""
    for _ in range(depth):
        label = f"{label}.1" if label else "1"
        head.append(f"<Parallel>\n<Goal>\n<Outline>\n{label}: go deeper\n</Outline>\n</Goal>\n<Path>\n{label}: in\n")
        tail.append("\n</Path>\n<Conclusion>\ndone\n</Conclusion>\n</Parallel>\n")
    return "Start.\n" + "".join(head) + "the bottom" + "".join(reversed(tail)) + "End."


def test_deep_nesting_parses_strictly_with_long_labels():
    text = nested_text(DEPTH)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # anything recursive on depth fails here
    try:
        result = parse(text, strict=True)  # labels past 64 characters read whole: no false path-label error
        layout = layout_from_parse(result)
    finally:
        sys.setrecursionlimit(limit)
    assert result.ok and result.max_depth == DEPTH
    assert result.all_blocks[-1].paths[0].label == ".".join(["1"] * DEPTH)
    assert bool(layout.visibility.all()) is False and bool(layout.visibility[1:, 1:].all())  # one path per block


def test_deep_nesting_through_the_token_layout_and_the_mask():
    built = build(_deep_items(30))
    layout = compute_layout(torch.tensor(built.ids), TAG_IDS)
    assert layout.position_ids.tolist() == built.positions
    dense = torch.tensor(reference_mask(built.addresses))
    seg = layout.segment_ids.long()
    order = layout.order
    ranks = order[seg]
    before = ranks[:, None, :] <= ranks[None, :, :]
    ours = torch.ones_like(dense).tril() & (before[..., 0] == before[..., 1])
    assert torch.equal(ours, dense)


def _deep_items(depth: int):
    """Two paths per block, nested in the second path, ``depth`` levels: siblings at every level."""
    items = [("text", [40])]
    for _ in range(depth):
        items = [("text", [41]), ("block", [[("text", [42])], items], [43])]
    return items


def test_branch_tree_of_a_deep_generation_needs_no_recursion():
    branches = [dict(id=0, parent=None, label="", tokens=5, start_step=0, end_step=9, closed=True)]
    for k in range(1, 2000):
        branches.append(dict(id=k, parent=k - 1, label="1", tokens=1, start_step=k, end_step=k, closed=True))
    lines = branch_tree({"branches": branches}).splitlines()
    assert len(lines) == 2000 and lines[-1].startswith("  " * 1999 + "└─ 1")


def test_generate_after_a_prompt_nested_deep(tokenizer):
    """A prompt nested ~330 blocks deep: the engine lays it out and decodes after it (it used to crash).
    Short labels: with "1.1.1..." the prompt would grow with the square of the depth."""
    level = ("<Parallel><Goal><Outline>1:</Outline></Goal><Path>1:", "</Path><Conclusion>ok</Conclusion></Parallel>")
    prompt = tokenizer.encode("Start." + level[0] * 330 + "bottom" + level[1] * 330)
    model = TableLM(tokenizer, default=tokenizer.encode("x")[0])
    out = run_engine(model, [prompt], max_new_tokens=4)
    assert out.sequences.shape[1] == len(prompt) + 4
    tree = out.multiverse[0]["tree"]  # the prompt's blocks, as deep as they nest
    for _ in range(330):
        (tree,) = tree["blocks"] if "length" in tree else tree["paths"][0]["blocks"]
    assert tree["paths"][0]["blocks"] == []


def test_a_deep_parse_prints_and_compares_without_recursion():
    result = parse(nested_text(DEPTH))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        text = repr(result.streams[-1]) + repr(result.streams[1])
        assert result.streams[-1] != result.streams[-2] and result.streams[-1] == result.streams[-1]
    finally:
        sys.setrecursionlimit(limit)
    assert "sid=" in text


def test_many_small_blocks_take_memory_linear_in_the_text():
    """The 10 MB benchmark's shape at 64 KB and 256 KB: 4x the blocks (and streams), ~4x the memory; an S x S
    matrix would make it 16x (it took 15.9 GB at 10 MB)."""
    block = ("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n"
             "<Path>\n1: x\n</Path>\n<Path>\n2: y\n</Path>\n<Conclusion>\nz\n</Conclusion>\n</Parallel>\n")
    texts = [block * (size // len(block)) for size in (2**16, 2**18)]
    small, large = (traced_peak(lambda t=t: layout_from_parse(parse(t))) for t in texts)
    assert large < 6 * small and large < 100 * len(texts[1])  # ~47 bytes per character now
    layout = layout_from_parse(parse(texts[1]))
    assert layout.order.shape == (2 + 2 * (2**18 // len(block)), 2)
