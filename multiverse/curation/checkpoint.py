"""The checkpoint: one JSON line per finished item, appended and flushed to disk as soon as it exists.

A crash can tear at most the line being written. On open, a torn last line is cut off (the item it
belonged to simply runs again); every complete line is kept. When an id has several lines (a failure
retried with ``--retry-failed``), the last one wins.
"""

import json
import os
import threading
from pathlib import Path


class Checkpoint:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        self.torn = 0
        if self.path.exists():
            self._load()
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self):
        data = self.path.read_bytes()
        keep = len(data) if data.endswith(b"\n") or not data else data.rfind(b"\n") + 1
        for n, line in enumerate(data[:keep].splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self.records[record["id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{self.path}:{n}: not a checkpoint record ({err}); "
                                 "is this the checkpoint of another tool?") from None
        if keep < len(data):
            self.torn = 1
            with self.path.open("r+b") as f:
                f.truncate(keep)

    def done(self, retry_failed: bool = False) -> set[str]:
        return {i for i, r in self.records.items() if not (retry_failed and r["outcome"] != "ok")}

    def append(self, record: dict):
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.records[record["id"]] = record

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
