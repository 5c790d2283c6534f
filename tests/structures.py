"""Random well-formed Multiverse token sequences with the answer key built alongside, not parsed.

Every token carries the address of its branch ((block, path), ...) and its position under the
reference rules, written down as the sequence is generated, so tests can check the parser, layout
and engine against something that never went through them.
"""

from dataclasses import dataclass, field

from hypothesis import strategies as st

TAG_IDS = list(range(100, 112))
(THINK, END_THINK, PARALLEL, END_PARALLEL, GOAL, END_GOAL, OUTLINE, END_OUTLINE, PATH, END_PATH, CONCLUSION,
 END_CONCLUSION) = TAG_IDS
NL = 5


@dataclass
class Built:
    ids: list = field(default_factory=list)
    addresses: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    n_blocks: int = 0

    def emit(self, token, address, pos):
        self.ids.append(token)
        self.addresses.append(address)
        self.positions.append(pos)
        return pos + 1


@st.composite
def texts(draw, max_len=4):
    return draw(st.lists(st.integers(20, 60), min_size=0, max_size=max_len))


@st.composite
def stream(draw, depth, max_depth):
    """A list of items: ("text", [ids]) or ("block", [stream per path], conclusion ids)."""
    items = [("text", draw(texts()))]
    n_blocks = draw(st.integers(0, 2 if depth < max_depth else 0))
    for _ in range(n_blocks):
        n_paths = draw(st.integers(1, 3))
        paths = [draw(stream(depth + 1, max_depth)) for _ in range(n_paths)]
        items.append(("block", paths, draw(texts())))
        items.append(("text", draw(texts())))
    return items


def build(items) -> Built:
    out = Built()
    out.emit(20, (), 0)  # never empty
    _build(items, out, (), 1)
    return out


def _build(items, out: Built, address, pos):
    for item in items:
        if item[0] == "text":
            for t in item[1]:
                pos = out.emit(t, address, pos)
            continue
        _, paths, conclusion = item
        uid = out.n_blocks
        out.n_blocks += 1
        for t in (PARALLEL, NL, GOAL):
            pos = out.emit(t, address, pos)
        for k in range(len(paths)):
            for t in (NL, OUTLINE, 21 + k, END_OUTLINE):
                pos = out.emit(t, address, pos)
        for t in (NL, END_GOAL):
            pos = out.emit(t, address, pos)
        goal = pos - 1
        last_end = longest = 0
        for k, path in enumerate(paths):
            child = address + ((uid, k),)
            # The reference training rule: <Path> at g + 1. The separator (which opens the path) takes
            # g + 1 as well: for path 1 that is the reference's own layout, for paths 2..n our one deviation.
            out.emit(NL, child, goal + 1)
            p = out.emit(PATH, child, goal + 1)
            p = out.emit(21 + k, child, p)
            p = _build(path, out, child, p)
            last_end = out.emit(END_PATH, child, p) - 1
            longest = max(longest, last_end - goal)
        out.emit(NL, address, last_end + 1)  # follows the last path in sequence order
        pos = goal + longest + 1  # <Conclusion>
        for t in (CONCLUSION, *conclusion, END_CONCLUSION, NL, END_PARALLEL):
            pos = out.emit(t, address, pos)
    return pos


def siblings(a, b) -> bool:
    """Two addresses sit in different paths of one block (written independently of the package)."""
    blocks_a = dict(a)
    return any(block in blocks_a and blocks_a[block] != path for block, path in b)


def reference_mask(addresses):
    n = len(addresses)
    return [[k <= q and not siblings(addresses[q], addresses[k]) for k in range(n)] for q in range(n)]
