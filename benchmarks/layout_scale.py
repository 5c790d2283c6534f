"""How the layout scales: one block of 2000 paths, and 10 MB of small blocks.

    python benchmarks/layout_scale.py            # both cases, one JSON line each
    python benchmarks/layout_scale.py --mb 1     # a smaller text case

Each case runs in a fresh subprocess, so its peak RSS is its own: ``peak_mb`` is the peak resident memory
of that process less what it held before the case (Python, torch, numpy); ``cpu_seconds`` is the process's CPU
time, the figure to read on a loaded machine (the header line gives the load). Targets (issue 13): a block of
2000 paths laid out in < 0.5 s; 10 MB of small blocks in < 10 s and < 2 GB. Before the linear layout:
10-22 s and 85 s / 15.9 GB (an S x S visibility matrix for 126k streams).

- ``block_2000_ids``: token ids (``compute_layout``, as the model and the collator run it), 2000 paths of
  ~20 tokens each under one ``</Goal>``.
- ``engine_fork_2000``: the engine's side of the same fork: 2000 visibility rows (``LayoutBuffers.add_stream``).
- ``small_blocks_text``: ``--mb`` MB of two-path blocks parsed as text (what ``validate`` and ``stats`` read).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

SMALL_BLOCK = ("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n"
               "<Path>\n1: x\n</Path>\n<Path>\n2: y\n</Path>\n<Conclusion>\nz\n</Conclusion>\n</Parallel>\n")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def block_ids(n_paths: int, path_tokens: int = 20):
    from multiverse.modeling_multiverse.configuration_multiverse import QWEN25_TAG_IDS as T

    nl, text = 198, list(range(1000, 1000 + path_tokens))
    ids = [9707, 11, T[2], nl, T[4]]
    for k in range(n_paths):
        ids += [nl, T[6], 16 + k % 10, 25, 264, T[7]]
    ids += [nl, T[5]]
    for k in range(n_paths):
        ids += [nl, T[8], nl, 16 + k % 10, 25, *text, nl, T[9]]
    ids += [nl, T[10], 2055, T[11], nl, T[3], 13]
    return ids, T


def case_block(n_paths: int) -> dict:
    import torch

    from multiverse.modeling_multiverse.layout import compute_layout

    ids, tags = block_ids(n_paths)
    ids = torch.tensor(ids)
    before, cpu = rss_mb(), time.process_time()
    start = time.perf_counter()
    layout = compute_layout(ids, tags)
    seconds = time.perf_counter() - start
    return dict(tokens=len(ids), segments=int(layout.order.shape[0]), seconds=round(seconds, 3),
                cpu_seconds=round(time.process_time() - cpu, 3), peak_mb=round(peak_mb() - before, 1))


def case_engine_fork(n_paths: int) -> dict:
    from multiverse.modeling_multiverse.kv_cache import LayoutBuffers
    from multiverse.modeling_multiverse.parser import IncrementalParser
    from multiverse.modeling_multiverse.tags import END_GOAL, END_OUTLINE, GOAL, OUTLINE, PARALLEL

    parser = IncrementalParser(False, True, "tokens", None)
    units = [PARALLEL, GOAL] + [OUTLINE, END_OUTLINE] * n_paths + [END_GOAL]
    for i, code in enumerate(units):
        parser.feed(code, i, i + 1)
    root = parser.cur.parent
    buffers = LayoutBuffers(1, 16, "cpu")
    before = rss_mb()
    start = time.perf_counter()
    buffers.add_stream(0, parser.streams[0])
    buffers.add_stream(0, root)
    frame = root.top
    first = parser.streams[-1]
    buffers.add_stream(0, first)
    for k in range(1, n_paths):  # what the engine's _fork does: spawn each path and write its row
        buffers.add_stream(0, root.spawn(frame, first.sid + k, str(k + 1)))
    seconds = time.perf_counter() - start
    return dict(streams=first.sid + n_paths, seconds=round(seconds, 3), peak_mb=round(peak_mb() - before, 1))


def case_small_blocks(mb: float) -> dict:
    from multiverse.modeling_multiverse.layout import layout_from_parse
    from multiverse.modeling_multiverse.parser import parse

    text = SMALL_BLOCK * int(mb * 2**20 // len(SMALL_BLOCK))
    before, cpu = rss_mb(), time.process_time()
    start = time.perf_counter()
    result = parse(text)
    parsed = time.perf_counter()
    layout = layout_from_parse(result)
    seconds = time.perf_counter() - start
    return dict(chars=len(text), segments=int(layout.order.shape[0]), parse_seconds=round(parsed - start, 3),
                seconds=round(seconds, 3), cpu_seconds=round(time.process_time() - cpu, 3),
                peak_mb=round(peak_mb() - before, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, default=2000)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--case", choices=["block_2000_ids", "engine_fork_2000", "small_blocks_text"])
    args = parser.parse_args()
    if args.case:
        run = {"block_2000_ids": lambda: case_block(args.paths),
               "engine_fork_2000": lambda: case_engine_fork(args.paths),
               "small_blocks_text": lambda: case_small_blocks(args.mb)}[args.case]
        print(json.dumps(dict(case=args.case, **run())))
        return
    machine = dict(machine=platform.node(), cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                   load_1min=round(os.getloadavg()[0], 2), python=platform.python_version(),
                   command=" ".join([os.path.basename(sys.executable), *sys.argv]))
    print(json.dumps(machine))
    for case in ("block_2000_ids", "engine_fork_2000", "small_blocks_text"):
        command = [sys.executable, __file__, "--case", case, "--paths", str(args.paths), "--mb", str(args.mb)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
