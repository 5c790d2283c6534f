"""``multiverse eval``: grade a benchmark, Multiverse against autoregressive decoding of the same model."""

import json
from pathlib import Path

import typer

from ..hub_cards.cli import USER_ERRORS, _fail

def _budgets(values: list[str]) -> list[int]:
    try:
        budgets = [int(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{values}: give integers, e.g. --max-new-tokens 256,1024",
                                 param_hint="--max-new-tokens") from None
    if not budgets or min(budgets) < 1:
        raise typer.BadParameter(f"{values}: every budget must be a positive integer", param_hint="--max-new-tokens")
    return sorted(set(budgets))


def evaluate(model: str = typer.Argument(..., help="A Multiverse model folder or Hub id"),
             benchmark: Path = typer.Option(..., exists=True, dir_okay=False, help="JSONL with problem and answer"),
             max_new_tokens: list[str] = typer.Option(["1024"], help="Token budgets: 256,1024 or repeat the option"),
             modes: str = typer.Option("parallel,autoregressive", help="parallel, autoregressive or both"),
             out: Path = typer.Option(Path("eval_results"), help="Folder for results.md, results.json and the PNG"),
             limit: int = typer.Option(None, help="Only the first N problems"),
             batch_size: int = typer.Option(8, help="Prompts decoded together"),
             system: str = typer.Option(None, help="System message before each problem"),
             max_branches: int = typer.Option(16), max_depth: int = typer.Option(4),
             device: str = typer.Option("cpu"), dtype: str = typer.Option("auto"),
             progress: bool = typer.Option(True, help="Show a progress bar")):
    """Grade a benchmark with math-verify: Multiverse vs autoregressive decoding of the same model, per budget."""
    from . import evaluate as run_eval
    from . import MODES, load_benchmark, markdown_table, summarize, write_report
    from ..hub_cards.loading import load_multiverse

    budgets = _budgets(max_new_tokens)
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list or set(mode_list) - set(MODES):
        raise typer.BadParameter(f"{modes!r}; choose from {','.join(MODES)}", param_hint="--modes")
    try:
        problems = load_benchmark(benchmark, limit)
        lm, tok = load_multiverse(model, dtype=dtype, device=device)
    except USER_ERRORS as err:
        _fail(err)
    records = run_eval(lm, tok, problems, budgets, mode_list, batch_size=batch_size, system=system,
                       options=dict(max_branches=max_branches, max_depth=max_depth), progress=progress)
    rows = summarize(records)
    settings = dict(benchmark_file=str(benchmark), budgets=budgets, modes=mode_list, batch_size=batch_size,
                    system=system, max_branches=max_branches, max_depth=max_depth, device=device, greedy=True)
    paths = write_report(records, rows, out, benchmark=benchmark.stem, model=str(model), settings=settings)
    typer.echo(markdown_table(rows))
    typer.echo(f"wrote {paths['table']}, {paths['json']}, {paths['plot']}")
    typer.echo(json.dumps({"benchmark": benchmark.stem, "summary": rows}))


def register(app: typer.Typer):
    app.command("eval")(evaluate)
