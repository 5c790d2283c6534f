"""The sequential form of Multiverse text: the same reasoning with the parallel structure taken out.

One rule, used by the curator (the autoregressive split of a curated dataset) and by the autoregressive
baseline recipe: goals (the fork plans) go, path bodies lose their ``i:`` labels (which only make sense
next to the outlines), the ten parallel tags go and blank lines collapse. ``<Think>``/``</Think>`` stay:
they frame the reasoning in both forms.
"""

import re

from .modeling_multiverse.tags import TAGS

PARALLEL_TAGS = TAGS[2:]  # <Parallel> ... </Conclusion>; TAGS[:2] are <Think> </Think>
_GOAL = re.compile(r"<Goal>.*?</Goal>", re.S)  # a goal holds outlines only, never a nested goal
_PATH_LABEL = re.compile(r"<Path>\s*[0-9]+(?:\.[0-9]+)*\s*:[ \t]*")
_PARALLEL_TAG = re.compile("|".join(re.escape(t) for t in PARALLEL_TAGS))
_BLANK_LINES = re.compile(r"\n\s*\n+")


def to_sequential_text(text: str) -> str:
    """``text`` without its parallel structure (text without parallel tags comes back unchanged)."""
    if not _PARALLEL_TAG.search(text):
        return text
    text = _PARALLEL_TAG.sub("", _PATH_LABEL.sub("", _GOAL.sub("", text)))
    return _BLANK_LINES.sub("\n", text)
