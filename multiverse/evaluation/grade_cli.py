"""``multiverse grade FILE...``: grade finished transcripts, the check that the grader agrees with real output.

A file is either a transcript in the corpus's format (``问题:`` / ``模型解答:`` / ``参考答案:``, see
``multiverse.transcripts``), or JSONL of completions: ``multiverse eval``'s records.jsonl, or any rows with a
``completion`` and an ``answer`` (a letter when the row's ``kind`` is ``choice``). Prints one JSON object per
file and a totals line: files, graded, correct, accuracy, how many gave no answer, and the structure.
"""

import json
from pathlib import Path

import typer

from .grading import UNFINISHED, grade_choice
from .grading import grade as grade_math


def _items(path: Path) -> list[dict]:
    """(completion, answer, kind) of each graded item in ``path``."""
    from ..jsonl import iter_jsonl
    from ..transcripts import read_transcript

    if path.suffix == ".jsonl":
        items = []
        for n, row in iter_jsonl(path):
            if not isinstance(row.get("completion"), str) or row.get("answer") is None:
                raise ValueError(f"{path}:{n}: a completion row needs a text 'completion' and an 'answer'")
            items.append(dict(completion=row["completion"], answer=str(row["answer"]), kind=row.get("kind", "math")))
        return items
    transcript = read_transcript(path)
    return [dict(completion=transcript.completion, answer=transcript.reference, kind="math")]


def _structure(items: list[dict], tokenizer) -> dict:
    from ..stats import text_stats

    rows = [text_stats(i["completion"], tokenizer) for i in items]
    length, critical = sum(r["length"] for r in rows), sum(r["critical_path"] for r in rows)
    return dict(units=rows[0]["units"] if rows else "chars", blocks=sum(r["blocks"] for r in rows),
                forked=sum(r["blocks"] > 0 for r in rows), length=length, critical_path=critical,
                ideal_parallelism=round(length / critical, 4) if critical else 1.0)


def _totals(rows: list[dict]) -> dict:
    graded, correct = sum(r["graded"] for r in rows), sum(r["correct"] for r in rows)
    length, critical = sum(r["length"] for r in rows), sum(r["critical_path"] for r in rows)
    return dict(total=True, files=len(rows), completions=sum(r["completions"] for r in rows), graded=graded,
                correct=correct, accuracy=round(correct / graded, 4) if graded else None,
                no_answer=sum(r["no_answer"] for r in rows), forked=sum(r["forked"] for r in rows),
                blocks=sum(r["blocks"] for r in rows), length=length, critical_path=critical,
                ideal_parallelism=round(length / critical, 4) if critical else 1.0)


def grade_file(path, tokenizer=None, unfinished: str = "no-answer") -> dict:
    """The grades and the structure of one file's completions."""
    path = Path(path)
    items = _items(path)
    graded = [i for i in items if i["answer"] is not None]
    grades = [(grade_choice if i["kind"] == "choice" else grade_math)(i["completion"], i["answer"], unfinished)
              for i in graded]
    row = dict(file=str(path), completions=len(items), graded=len(graded), correct=sum(g.correct for g in grades),
               no_answer=sum(g.predicted is None for g in grades))
    row["accuracy"] = round(row["correct"] / row["graded"], 4) if graded else None
    if len(items) == 1 and graded:
        row.update(reference=graded[0]["answer"], predicted=grades[0].predicted)
    return {**row, **_structure(items, tokenizer)}


def grade(files: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                             help="Corpus-format transcripts or JSONL of completions"),
          tokenizer: str = typer.Option(None, help="Count the structure in this tokenizer's tokens, not characters"),
          grade_unfinished: bool = typer.Option(False, "--grade-unfinished",
                                                help="Grade the whole text of a completion that never closed "
                                                     "<Think> (default: it has no answer)"),
          trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                 help="Run the tokenizer folder's own code")):
    """Grade finished completions: one JSON object per file, then the totals."""
    tok = None  # a user's mistake (bad file or tokenizer path) is printed as one line by multiverse.cli
    if tokenizer:
        from transformers import AutoTokenizer

        from ..hub_cards.loading import resolve_model_path

        tok = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer, "--tokenizer"),
                                            trust_remote_code=trust_remote_code)
    rows = []
    for path in files:
        rows.append(grade_file(path, tok, UNFINISHED[1] if grade_unfinished else UNFINISHED[0]))
        typer.echo(json.dumps(rows[-1], ensure_ascii=False))
    typer.echo(json.dumps(_totals(rows)))
