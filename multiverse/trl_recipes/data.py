"""Training data: loading, and the sequential form that the autoregressive baseline trains on.

The curation pipeline writes a ``datasets.Dataset`` with ``prompt`` and ``completion`` in conversational
form; the completion is the Multiverse-tagged assistant text. The *sequential form* of a completion is the
same reasoning as plain text, by the one rule in ``multiverse.sequential_form``.
"""

import os

from ..sequential_form import to_sequential_text

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def load_training_dataset(name: str, config: str | None = None, split: str = "train", streaming: bool = False):
    """A split from a folder written by ``Dataset.save_to_disk``, a local data file, or the Hub."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if not name:
        raise ValueError("dataset_name is empty: give a Hub id, a dataset folder or a .jsonl/.parquet file")
    if os.path.isdir(name) and (os.path.exists(os.path.join(name, "dataset_info.json"))
                                or os.path.exists(os.path.join(name, "dataset_dict.json"))):
        data = load_from_disk(name)
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"{name} has splits {sorted(data)}, not dataset_train_split={split!r}")
            return data[split]
        return data
    suffix = os.path.splitext(name)[1].lower()
    if os.path.isfile(name):
        if suffix not in LOCAL_FORMATS:
            raise ValueError(f"{name}: unknown data file type {suffix!r}; use one of {sorted(LOCAL_FORMATS)}")
        return load_dataset(LOCAL_FORMATS[suffix], data_files={split: name}, split=split, streaming=streaming)
    return load_dataset(name, name=config, split=split, streaming=streaming)


def _sequential_value(value, column: str):
    if isinstance(value, str):
        return to_sequential_text(value)
    if isinstance(value, list):  # conversational: only the assistant's turns carry structure
        return [{**m, "content": to_sequential_text(m["content"])} if m.get("role") == "assistant" else m
                for m in value]
    raise ValueError(f"column {column!r} holds {type(value).__name__}; expected text or a list of messages")


def text_column(dataset) -> str:
    """The column that holds the structured text: ``completion`` (prompt-completion) or ``messages``."""
    columns = dataset.column_names or []
    for name in ("completion", "messages", "text"):
        if name in columns:
            return name
    raise ValueError(f"dataset columns {columns}: expected prompt/completion, messages or text")


def sequential_example(example: dict, column: str, sequential_column: str | None = None) -> dict:
    """One example in sequential form: from ``sequential_column`` when the data has one, else tags stripped."""
    if sequential_column:
        if sequential_column not in example:
            raise ValueError(f"sequential_column={sequential_column!r} is not a column (have {sorted(example)})")
        return {column: example[sequential_column]}
    return {column: _sequential_value(example[column], column)}


def sequential_dataset(dataset, sequential_column: str | None = None, num_proc: int | None = None):
    """The whole dataset in sequential form, for the autoregressive baseline."""
    column = text_column(dataset)
    from datasets import Dataset

    kwargs = {"num_proc": num_proc} if num_proc else {}
    if isinstance(dataset, Dataset):  # IterableDataset.map takes no desc
        kwargs["desc"] = "Removing the parallel structure"
    return dataset.map(sequential_example, fn_kwargs={"column": column, "sequential_column": sequential_column},
                       **kwargs)
