"""The ``multiverse`` command. Each subpackage with a ``cli.py`` adds its own commands through ``register``."""

import importlib
import json
from pathlib import Path

import typer

app = typer.Typer(help="Multiverse for Hugging Face: convert, inspect, train and generate.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
SUBCOMMAND_PACKAGES = ("generation", "curation", "trl_recipes", "hub_cards", "evaluation", "quickstart")


@app.command()
def convert(base: str = typer.Argument(..., help="Qwen2-family checkpoint: a local folder or a Hub id"),
            out: Path = typer.Argument(..., help="Folder to write the Multiverse checkpoint to"),
            dtype: str = typer.Option("auto", help="Weights dtype: auto, bfloat16, float16 or float32")):
    """Add the 12 tags, initialize their embeddings and write a Multiverse checkpoint with remote code."""
    from .conversion import convert as run_convert

    folder = run_convert(base, str(out), dtype=dtype)
    typer.echo(f"wrote {folder}")


@app.command()
def stats(files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Files of model output"),
          tokenizer: str = typer.Option(None, help="Count tokens with this tokenizer instead of characters"),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per file, then the totals")):
    """Structure statistics: blocks, depth, paths per block, critical path and ideal parallelism."""
    from .stats import file_stats, total_stats

    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    rows = []
    for path in files:
        row = file_stats(path, tok)
        rows.append(row)
        if as_json:
            typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            flag = "ok" if row["ok"] else f"{len(row['repairs'])} repairs"
            typer.echo(f"{path.name:<24} {flag:<12} blocks={row['blocks']:<3} depth={row['max_depth']} "
                       f"{row['units']}={row['length']:<7} critical={row['critical_path']:<7} "
                       f"ideal={row['ideal_parallelism']:.2f}")
    total = total_stats(rows)
    typer.echo(json.dumps(total) if as_json else
               f"{total['files']} files, {total['parsed']} clean, ideal parallelism {total['ideal_parallelism']:.3f}")


def _register_subcommands():
    for name in SUBCOMMAND_PACKAGES:
        module_name = f"multiverse.{name}.cli"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        module.register(app)


_register_subcommands()


def main():
    app()


if __name__ == "__main__":
    main()
