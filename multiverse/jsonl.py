"""JSON Lines, the one reader and the one durable appender of the project.

- ``iter_jsonl(path)`` yields ``(line_number, record)`` for every non-blank line. A line that is not a
  JSON object raises ``JsonlError`` ("FILE:LINE: ..."), or, when a ``bad_lines`` list is given, is
  recorded there as a ``BadLine`` and skipped. A last line without its newline that does not parse is
  *torn* (a writer died mid-line); ``BadLine.torn`` says so and ``BadLine.offset`` is where it starts.
- ``read_jsonl(path)`` is the list of records.
- ``JsonlAppender(path)`` appends one record per call and returns only once it is on disk (flush and
  fsync), so whatever a crash leaves behind is every finished record plus at most one torn line.
- ``write_jsonl(path, records)`` writes a whole file.

Lines are decoded one by one as UTF-8, so a line cut inside a multi-byte character is a bad line,
not an error for the whole file.
"""

import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BadLine:
    line: int  # 1-based
    offset: int  # byte offset of the line's start
    message: str
    torn: bool  # the last line, without its newline: an interrupted write


class JsonlError(ValueError):
    def __init__(self, path, bad: BadLine):
        self.path, self.bad = Path(path), bad
        what = "torn last line (no newline)" if bad.torn else "not a JSON object"
        super().__init__(f"{path}:{bad.line}: {what}: {bad.message}")


def _parse(raw: bytes):
    try:
        value = json.loads(raw.rstrip(b"\r\n").decode("utf-8"))
    except UnicodeDecodeError as err:
        return None, f"invalid UTF-8 at byte {err.start}"
    except json.JSONDecodeError as err:
        return None, f"{err.msg} at column {err.pos + 1}"
    except RecursionError:
        return None, "nested too deeply to read"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    return value, None


def iter_jsonl(path, *, bad_lines: list | None = None) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    offset = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            record, problem = _parse(raw)
            if problem is None:
                yield n, record
                continue
            bad = BadLine(n, start, problem, torn=not raw.endswith(b"\n"))
            if bad_lines is None:
                raise JsonlError(path, bad)
            bad_lines.append(bad)


def read_jsonl(path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(path, records: Iterable[dict]):
    with Path(path).open("w", encoding="utf-8") as f:
        for record in records:
            f.write(_line(record))


class JsonlAppender:
    """Durable appends from any thread. A file whose last line lacks its newline gets one first, so a new
    record never runs into the old line."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a+b")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell():
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")

    def append(self, record: dict):
        data = _line(record).encode("utf-8")  # serialized before the lock: a bad record writes nothing
        with self._lock:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
