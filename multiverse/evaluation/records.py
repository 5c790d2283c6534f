"""The evaluation's records on disk: one JSON line per finished completion, appended and fsynced at once.

A rerun of the same command reads ``records.jsonl`` back and skips every (mode, budget, problem, sample)
already there, so ``kill -9`` at any moment loses nothing finished. ``settings.json`` holds what decides a
completion (model, prompt, decoding, budget rule...): a rerun with other settings into the same folder is
refused instead of mixing two experiments in one table.
"""

import json
import os
from pathlib import Path

from ..jsonl import JsonlAppender, iter_jsonl

RECORDS, SETTINGS = "records.jsonl", "settings.json"
# Settings that change what a completion is; modes, budgets, samples and the problem count may grow on a rerun.
FINGERPRINT = ("model", "benchmark", "preset", "system", "user_template", "chat", "temperature", "top_p", "top_k",
               "seed", "budget", "max_total_tokens", "max_branches", "max_depth", "batch_size", "dtype", "device")


def record_key(record: dict) -> tuple:
    return record["mode"], record["max_new_tokens"], str(record["id"]), record["sample"]


class RecordLog:
    def __init__(self, out_dir: str | Path, settings: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / RECORDS
        self._check_settings(settings)
        self.records = self._read()
        self.done = {record_key(r) for r in self.records}
        self._appender = JsonlAppender(self.path)

    def _check_settings(self, settings: dict):
        mine = {k: settings.get(k) for k in FINGERPRINT}
        path = self.dir / SETTINGS
        if path.is_file() and self.path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            changed = [f"{k}: {old.get(k)!r} -> {mine[k]!r}" for k in FINGERPRINT if old.get(k) != mine[k]]
            if changed:
                raise ValueError(f"{self.dir} holds completions made with other settings ({'; '.join(changed)}); "
                                 "rerun with those settings to resume, or pass another --out")
        path.write_text(json.dumps(mine, indent=1), encoding="utf-8")

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        bad = []
        records = [r for _, r in iter_jsonl(self.path, bad_lines=bad)]
        for line in bad:
            if not line.torn:
                raise ValueError(f"{self.path}:{line.line}: {line.message}; fix or delete that line to resume")
            # A record cut by a kill mid-write: it was never finished, so it is dropped and made again.
            with self.path.open("r+b") as f:
                f.truncate(line.offset)
                os.fsync(f.fileno())
        return records

    def append(self, record: dict):
        self._appender.append(record)
        self.records.append(record)
        self.done.add(record_key(record))

    def close(self):
        self._appender.close()
