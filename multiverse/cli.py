"""The ``multiverse`` command. Each subpackage with a ``cli.py`` adds its own commands through ``register``.

A user error (``USER_ERRORS``: a bad value, a missing file or folder, an unreachable Hub)
escaping any command is printed as one line; ``multiverse --debug COMMAND ...`` shows the traceback instead.
Other exceptions are bugs and keep their traceback.
"""

import importlib
import json
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

SUBCOMMAND_PACKAGES = ("generation", "curation", "trl_recipes", "hub_cards", "evaluation", "quickstart")
USER_ERRORS = (ValueError, OSError)  # OSError covers FileNotFoundError and the Hub's connection errors


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class _Commands(TyperGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own (usage errors, exits): already one line
        except USER_ERRORS as err:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {one_line(err)} (multiverse --debug ... shows the traceback)", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Commands, help="Multiverse for Hugging Face: convert, inspect, train and generate.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error")):
    """Multiverse for Hugging Face: convert, inspect, train and generate."""


@app.command()
def convert(base: str = typer.Argument(..., help="Qwen2-family checkpoint: a local folder or a Hub id"),
            out: Path = typer.Argument(..., help="Folder to write the Multiverse checkpoint to"),
            dtype: str = typer.Option("auto", help="Weights dtype: auto, bfloat16, float16 or float32")):
    """Add the 12 tags, initialize their embeddings and write a Multiverse checkpoint with remote code."""
    from .conversion import convert as run_convert
    from .hub_cards.loading import resolve_model_path

    folder = run_convert(resolve_model_path(base, "BASE"), str(out), dtype=dtype)
    typer.echo(f"wrote {folder}")


@app.command()
def stats(files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Files of model output"),
          tokenizer: str = typer.Option(None, help="Count tokens with this tokenizer instead of characters"),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per file, then the totals"),
          trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                 help="Run the tokenizer folder's own code")):
    """Structure statistics: blocks, depth, paths per block, critical path and ideal parallelism."""
    from .stats import file_stats, total_stats

    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        from .hub_cards.loading import resolve_model_path

        # Explicit: left at None, transformers asks on the terminal when the folder has remote code.
        tok = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer, "--tokenizer"),
                                            trust_remote_code=trust_remote_code)
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
