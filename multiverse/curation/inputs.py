"""Read the items to curate: JSONL, or a ``datasets`` dataset saved on disk, with mapped columns.

Columns are found by name; the defaults cover s1K-1.1 (question, deepseek_thinking_trajectory,
deepseek_attempt), s1K 1.0 (thinking_trajectories is a list, attempt), and plain
question/trace/answer files such as ``multiverse toy-data`` writes.
"""

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..jsonl import read_jsonl

DEFAULT_COLUMNS = {
    "question": ("question", "problem", "prompt"),
    "trace": ("deepseek_thinking_trajectory", "thinking_trajectories", "gemini_thinking_trajectory", "trace",
              "sequential_trace", "reasoning", "thinking"),
    "answer": ("deepseek_attempt", "attempt", "gemini_attempt", "answer", "solution"),
}


@dataclass
class Item:
    id: str
    index: int
    question: str
    trace: str
    answer: str
    extra: dict = field(default_factory=dict)


def _rows(path: Path, split: str | None):
    if path.is_dir():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split is None:
                if len(data) != 1:
                    raise ValueError(f"{path} holds splits {list(data)}; choose one with --split")
                split = next(iter(data))
            if split not in data:
                raise ValueError(f"{path} has no split {split!r}; it has {list(data)}")
            data = data[split]
        return list(data), list(data.column_names)
    if not path.is_file():
        raise FileNotFoundError(f"INPUT {path}: no such file or folder (JSONL or a saved datasets folder)")
    if split is not None:
        raise ValueError(f"--split {split!r}: {path} is a JSONL file, which has no splits")
    rows = read_jsonl(path)
    return rows, sorted({k for r in rows for k in r})


def _pick(role: str, given: str | None, columns: list[str], path) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"--{role}-column {given!r} is not a column of {path}; columns: {columns}")
        return given
    for name in DEFAULT_COLUMNS[role]:
        if name in columns:
            return name
    raise ValueError(f"no {role} column in {path} (looked for {list(DEFAULT_COLUMNS[role])}); "
                     f"name it with --{role}-column; columns: {columns}")


def _text(value, role: str, where: str) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]  # s1K 1.0 stores one trajectory in a list
    if not isinstance(value, str):
        raise ValueError(f"{where}: {role} must be text, got {type(value).__name__}")
    return value


def load_items(path, *, question_column=None, trace_column=None, answer_column=None, id_column=None,
               split=None, limit=None) -> list[Item]:
    """Items in input order. The id is ``id_column`` when given (its values must be unique), else a hash of
    question and trace, so a rerun over a reordered or grown input still recognizes finished items."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: must be at least 1 (leave it out for every item)")
    path = Path(path)
    rows, columns = _rows(path, split)
    q = _pick("question", question_column, columns, path)
    t = _pick("trace", trace_column, columns, path)
    a = _pick("answer", answer_column, columns, path)
    if id_column is not None and id_column not in columns:
        raise ValueError(f"--id-column {id_column!r} is not a column of {path}; columns: {columns}")
    items = []
    for i, row in enumerate(rows[:limit]):
        where = f"{path} row {i}"
        question, trace = _text(row.get(q), "question", where), _text(row.get(t), "trace", where)
        answer = row.get(a)
        answer = "" if answer is None else _text(answer, "answer", where)
        if id_column is not None:
            if row.get(id_column) is None:
                raise ValueError(f"{where}: no value in --id-column {id_column!r}")
            item_id = str(row[id_column])
        else:
            item_id = hashlib.sha1(f"{question}\0{trace}".encode()).hexdigest()[:16]
        items.append(Item(item_id, i, question, trace, answer))
    if id_column is not None:
        repeated = {k: n for k, n in Counter(item.id for item in items).items() if n > 1}
        if repeated:
            shown = ", ".join(f"{k!r} x{n}" for k, n in list(repeated.items())[:10])
            raise ValueError(f"--id-column {id_column!r} of {path} repeats {len(repeated)} values ({shown}"
                             f"{', ...' if len(repeated) > 10 else ''}); ids must be unique")
    return items
