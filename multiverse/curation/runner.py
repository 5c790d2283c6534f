"""Run the pipeline over many items: bounded concurrency, a progress bar, the checkpoint, the report.

The backend is checked once (``backend.check()``) before any item runs, so a server that is down stops
the run with nothing recorded. Each finished item is appended to the checkpoint by the main thread the
moment its future completes.
Ctrl-C stops handing out new items and waits for the running ones (they are recorded); a second
Ctrl-C quits at once. Either way nothing that finished is lost, and a rerun skips it.
"""

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from tqdm.auto import tqdm

from .checkpoint import Checkpoint
from .pipeline import CurateConfig, curate_item
from .report import summarize


def run_curation(items, backend, config: CurateConfig, checkpoint_path, *, concurrency: int = 4,
                 retry_failed: bool = False, progress: bool = True, skip_bad_lines: bool = False) -> dict:
    """Curate ``items`` not yet in the checkpoint; returns the report over the whole checkpoint."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    started = time.monotonic()
    with Checkpoint(checkpoint_path, skip_bad_lines=skip_bad_lines) as ckpt:
        done = ckpt.done(retry_failed)
        seen, todo, duplicates = set(), [], 0
        for item in items:
            if item.id in seen:
                duplicates += 1  # the same question and trace again (ids from --id-column are unique)
            elif item.id not in done:
                todo.append(item)
            seen.add(item.id)
        skipped = sum(1 for i in seen if i in done)
        if todo and hasattr(backend, "check"):
            warning = backend.check()  # FatalBackendError: the server is down; nothing is recorded
            if warning:
                print(warning, file=sys.stderr)
        bar = tqdm(total=len(todo), desc="curate", unit="item", disable=not progress, dynamic_ncols=True)
        counts = {"ok": 0, "sequential": 0, "failed": 0}
        interrupted = False
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="curate")
        queue = iter(todo)
        running = set()

        def submit_next():
            item = next(queue, None)
            if item is not None:
                running.add(pool.submit(curate_item, item, backend, config))

        # Hand out only ``concurrency`` items at a time, so Ctrl-C leaves nothing queued to wait for.
        for _ in range(concurrency):
            submit_next()
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.discard(future)
                    record = future.result()  # FatalBackendError and bugs stop the run here
                    ckpt.append(record)
                    counts[record["outcome"]] += 1
                    bar.update(1)
                    bar.set_postfix(counts, refresh=False)
                    if not interrupted:
                        submit_next()
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write(f"interrupted: waiting for {len(running)} running items (Ctrl-C again to quit now); "
                       "finished items are in the checkpoint, rerun to resume", file=sys.stderr)
            try:
                for future in list(running):
                    record = future.result()
                    ckpt.append(record)
                    counts[record["outcome"]] += 1
            except KeyboardInterrupt:
                ckpt.close()
                bar.close()
                os._exit(130)  # the worker threads may sit in a long HTTP call; everything finished is saved
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)
        report = summarize(ckpt.records.values(), wall_seconds=time.monotonic() - started)
        report["run"] = {"items": len(seen), "resumed": skipped, "ran": sum(counts.values()), **counts,
                         "duplicates": duplicates, "torn_lines": ckpt.torn,
                         "skipped_checkpoint_lines": ckpt.skipped_lines, "interrupted": interrupted,
                         "backend": _describe(backend)}
    if interrupted:
        print_report(report)
        raise KeyboardInterrupt
    return report


def _describe(backend) -> str:
    return backend.describe() if hasattr(backend, "describe") else type(backend).__name__


def print_report(report: dict, stream=None):
    stream = stream or sys.stderr
    run = report.get("run", {})
    lines = []
    if run:
        lines.append(f"this run: {run['ran']} items ({run['ok']} ok, {run.get('sequential', 0)} sequential, "
                     f"{run['failed']} failed), {run['resumed']} already done, backend {run['backend']}"
                     + (" (interrupted: rerun the same command to resume)" if run["interrupted"] else ""))
        if run.get("duplicates"):
            lines.append(f"  {run['duplicates']} input rows repeat an earlier row's question and trace: run once")
        if run.get("skipped_checkpoint_lines"):
            lines.append(f"  checkpoint lines {run['skipped_checkpoint_lines']} are corrupt: skipped, their items ran")
    outcomes = ", ".join(f"{k} {v}" for k, v in report["outcomes"].items())
    lines.append(f"checkpoint: {report['items']} items, {outcomes}")
    for reason, n in report["failure_reasons"].items():
        lines.append(f"  failed {reason}: {n}")
    transient = report.get("transient_failures", 0)
    final = report["outcomes"].get("failed", 0) - transient
    if transient:
        lines.append(f"  {transient} failed transiently (timeout, 429, 5xx, connection): rerun the same command "
                     "to try them again")
    if final:
        lines.append(f"  {final} failed for good (answers, requests or errors no rerun changes): a rerun skips "
                     "them; pass --retry-failed to run them again")
    tokens = report["tokens"]
    lines.append(f"tokens: {tokens['prompt']} prompt + {tokens['completion']} completion = {tokens['total']} "
                 f"in {report['calls']} calls")
    lines.append(f"repairs needed by ok items: {report['repairs_histogram']}")
    ind = report["independence"]
    lines.append(f"path independence: {ind['flagged_items']} ok items flagged ({ind['flags']} flags: {ind['by_kind']})")
    if report["source_checks"]:
        sc = report["source_checks"]
        lines.append(f"keep-the-source: answer kept {sc['answer_kept']}, length ratio {sc['length_ratio']}, "
                     f"overlap {sc['overlap']}")
    if report.get("structure"):
        lines.append(f"structure: {report['structure']}")
    print("\n".join(lines), file=stream)
