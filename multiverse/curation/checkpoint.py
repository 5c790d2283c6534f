"""The checkpoint: one JSON line per finished item, appended durably (``multiverse.jsonl``) as soon as it exists.

A crash can tear at most the line being written. On open, a torn last line is cut off (the item it
belonged to simply runs again); every complete line is kept. A bad line anywhere else is not a crash's
doing: the open fails naming the line, unless ``skip_bad_lines`` is set, which leaves the line in the file
untouched and runs its item again. When an id has several lines (a failure retried), the last one wins.

One run at a time: the checkpoint holds a lock file (``PATH.lock``) while open, so a second run on the
same checkpoint stops at once instead of doing every item twice.
"""

from pathlib import Path

import filelock

from ..jsonl import BadLine, JsonlAppender, iter_jsonl
from .backends import is_transient


class CheckpointInUse(RuntimeError):
    pass


def lock_or_fail(path, what: str) -> filelock.FileLock:
    """Take the lock file ``path`` now, or say that ``what`` is in use."""
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise CheckpointInUse(f"{what} is in use by another multiverse curate run (lock file {path}); "
                              "wait for it to finish") from None
    return lock


def transient_failure(record: dict) -> bool:
    """A failure a later run may get past (timeout, 429, 5xx, dropped connection): never final."""
    reason = record.get("reason") or ""
    return record["outcome"] == "failed" and reason.startswith("backend:") and is_transient(reason[8:])


class Checkpoint:
    def __init__(self, path, *, skip_bad_lines: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = lock_or_fail(f"{self.path}.lock", f"checkpoint {self.path}")
        self.records: dict[str, dict] = {}
        self.torn = 0
        self.skipped_lines: list[int] = []
        try:
            if self.path.exists():
                self._load(skip_bad_lines)
            self._file = JsonlAppender(self.path)
        except BaseException:
            self._lock.release()
            raise

    def _load(self, skip_bad_lines: bool):
        bad = []
        for n, record in iter_jsonl(self.path, bad_lines=bad):
            if isinstance(record.get("id"), str) and record.get("outcome") in ("ok", "sequential", "failed"):
                self.records[record["id"]] = record
            else:
                bad.append(BadLine(n, -1, "a JSON object but not a checkpoint record (no id or outcome)", False))
        if bad and bad[-1].torn:
            self.torn = 1
            with self.path.open("r+b") as f:
                f.truncate(bad.pop().offset)
        if bad and not self.records:
            raise ValueError(f"{self.path}:{bad[0].line}: not a checkpoint record ({bad[0].message}), nor is any "
                             "other line; is this the checkpoint of another tool?")
        if bad and not skip_bad_lines:
            lines = [b.line for b in bad]
            raise ValueError(f"{self.path}:{lines[0]}: corrupt line ({bad[0].message})"
                             + (f"; also lines {lines[1:]}" if len(lines) > 1 else "")
                             + ". Every other line is a finished item and is kept: delete the bad lines, or pass "
                               "--skip-bad-lines to leave them in the file and run their items again")
        self.skipped_lines = [b.line for b in bad]

    def done(self, retry_failed: bool = False) -> set[str]:
        """Ids a run skips: everything recorded, except transient failures (always tried again) and, with
        ``retry_failed``, every failure."""
        return {i for i, r in self.records.items()
                if not (r["outcome"] == "failed" and (retry_failed or transient_failure(r)))}

    def append(self, record: dict):
        self._file.append(record)
        self.records[record["id"]] = record

    def close(self):
        if self._lock.is_locked:
            self._file.close()
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
