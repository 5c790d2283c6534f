"""Closing the structure when a budget cuts a prompt short, within ``max_new_tokens``.

A cut (``max_new_tokens``, ``max_critical_path``, a stopping criterion) can leave blocks and sibling paths
open. Linearizing them as they are would put path 2 inside path 1, so the returned sequence would read
back as a different tree. Instead every open stream is closed with tags only, the shortest way the grammar
(``structure.Stream``) accepts without a repair:

- a path: ``</Path>`` (``<Path></Path>`` when its seed had not reached ``<Path>`` yet);
- a block still in its goal: ``</Outline>`` if one is open, ``<Goal>`` / ``<Outline></Outline>`` if it has
  none, then ``</Goal>`` and one empty ``<Path></Path>`` per outline (paths that never started);
- a forked block: its paths close first, then ``<Conclusion></Conclusion></Parallel>``, or what of that is
  still missing.

Closing tags count as new tokens: the engine keeps ``generated + closing <= max_new_tokens`` at every token
(``closing`` is what closing everything open would take now), so the returned completion never exceeds
``max_new_tokens``. A branch stream holds at most one frame (``<Parallel>`` is legal only where no block of
the stream is open), which keeps these counts local to a stream.
"""

from .structure import CONCLUDED, EXPECT_GOAL, FORK, FORKED, IN_CONCLUSION, IN_OUTLINE, MERGED
from .tags import (
    CONCLUSION, END_CONCLUSION, END_GOAL, END_OUTLINE, END_PARALLEL, END_PATH, GOAL, OUTLINE, PATH,
)

_AFTER_FORK = {FORKED: (CONCLUSION, END_CONCLUSION, END_PARALLEL), MERGED: (CONCLUSION, END_CONCLUSION, END_PARALLEL),
               IN_CONCLUSION: (END_CONCLUSION, END_PARALLEL), CONCLUDED: (END_PARALLEL,)}


def goal_closing(phase: str, outlines: int) -> list[int]:
    """Tag codes that close a block cut before its fork: finish the goal, one empty path per outline."""
    codes = []
    if phase == EXPECT_GOAL:
        codes.append(GOAL)
    if phase == IN_OUTLINE:
        codes.append(END_OUTLINE)
    elif outlines == 0:
        codes += [OUTLINE, END_OUTLINE]
        outlines = 1
    return codes + [END_GOAL] + [PATH, END_PATH] * outlines + list(_AFTER_FORK[FORKED])


# The most one tag can grow the closing: ``<Parallel>`` opens a block that needs all of this.
MAX_GROWTH = len(goal_closing(EXPECT_GOAL, 0))


def own_closing(stream) -> list[int]:
    """Tag codes this stream appends itself when cut (its open paths, if forked, append their own first)."""
    if stream.closed:
        return []
    codes = []
    frame = stream.top
    if frame is not None:
        if frame.phase in _AFTER_FORK:
            codes += _AFTER_FORK[frame.phase]
        else:
            codes += goal_closing(frame.phase, len(frame.outlines))
    if stream.is_branch:
        codes += [END_PATH] if stream.opened else [PATH, END_PATH]
    return codes


def local_cost(stream) -> int:
    """Closing tags this stream's own tokens need (forked children count for themselves)."""
    return len(own_closing(stream))


def cost_after(stream, code: int) -> int:
    """``local_cost`` after the stream took tag ``code``, plus what the paths it would fork need, without
    touching the stream (its twin runs the grammar)."""
    sim = stream.twin(stream.sid)
    event, _ = sim.step(code, 0)
    unopened = 2 * len(sim.top.outlines) if event == FORK else 0
    return local_cost(sim) + unopened


def growth(stream, code: int) -> int:
    """How much closing everything grows when ``stream`` takes tag ``code`` (negative when it shrinks)."""
    return cost_after(stream, code) - local_cost(stream)
