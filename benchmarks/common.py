"""Shared pieces of the benchmarks: device facts, timing, synthetic structured sequences."""

import json
import platform
import sys
import time

import torch

from multiverse.modeling_multiverse.tags import TAGS


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 1):
    """Median seconds of ``repeat`` calls (after the caller's warm-up) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def command_line() -> str:
    return "python " + " ".join(sys.argv)


def finish(result: dict):
    """Print what was measured, where, how to reproduce it; the last line is the JSON."""
    result.setdefault("command", command_line())
    print(json.dumps(result))


def structured_ids(tag_ids, text_ids, paths: int, path_len: int, prefix_len: int = 8, conclusion_len: int = 16,
                   newline: int | None = None, label_ids=None, generator=None):
    """One block: prefix, goal with ``paths`` outlines, ``paths`` paths of ``path_len`` tokens, conclusion.

    ``text_ids`` is the pool random body tokens are drawn from; ``label_ids(k)`` gives the ids of "k:".
    """
    t = {name: tag_ids[i] for i, name in enumerate(TAGS)}
    nl = [newline] if newline is not None else []
    g = generator or torch.Generator().manual_seed(0)

    def body(n):
        return text_ids[torch.randint(len(text_ids), (max(n, 0),), generator=g)].tolist()

    def label(k):
        return label_ids(k) if label_ids else []

    ids = body(prefix_len) + nl + [t["<Parallel>"]] + nl + [t["<Goal>"]]
    for k in range(1, paths + 1):
        ids += nl + [t["<Outline>"]] + nl + label(k) + body(4) + nl + [t["</Outline>"]]
    ids += nl + [t["</Goal>"]]
    for k in range(1, paths + 1):
        head = nl + [t["<Path>"]] + nl + label(k)
        ids += head + body(path_len - len(head) - 1 - len(nl)) + nl + [t["</Path>"]]
    ids += nl + [t["<Conclusion>"]] + body(conclusion_len) + nl + [t["</Conclusion>"]] + nl + [t["</Parallel>"]]
    return ids
