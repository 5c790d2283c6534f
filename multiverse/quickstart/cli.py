"""``multiverse quickstart [--out DIR] [--smoke]``: the project's main job, offline, on a CPU."""

import json
from pathlib import Path

import typer


def quickstart(out: Path = typer.Option(Path("runs/quickstart"), help="Folder for data, models and results"),
               smoke: bool = typer.Option(False, help="A minute-long run of the same pipeline (for CI)"),
               train_steps: int = typer.Option(None, help="Override the optimizer steps per model"),
               seed: int = typer.Option(0)):
    """Toy task -> tokenizer -> Multiverse model + autoregressive baseline -> export -> parallel evaluation."""
    from .pipeline import QuickstartSettings, run

    settings = QuickstartSettings.smoke() if smoke else QuickstartSettings()
    settings.seed = seed
    if train_steps is not None:
        settings.train_steps = train_steps
    result = run(str(out), settings, log=typer.echo)
    base = result.get("baseline", {})
    typer.echo("\n--- one held-out problem ---\n" + result["example"]["question"])
    typer.echo(result["example"]["completion"])
    typer.echo("--- its branches ---\n" + result["example"]["tree"])
    typer.echo("\n--- results ---")
    typer.echo(f"model class (fresh process): {result['model_class']}")
    typer.echo(f"Multiverse, parallel decoding: exact match {result['accuracy']:.1%} on {result['problems']} "
               f"held-out problems, parallelism {result['parallelism']:.2f} tokens/step, {result['mv_seconds']}s")
    typer.echo(f"same model, autoregressive decoding: exact match {result['accuracy_autoregressive_decoding']:.1%}, "
               f"{result['ar_seconds']}s -> parallel speedup {result['speedup']}x")
    if base:
        typer.echo(f"autoregressive baseline (sequential data, same budget): exact match {base['accuracy']:.1%}")
    typer.echo(f"total {result['seconds']}s; models in {', '.join(result['folders'].values())}")
    typer.echo(json.dumps({"accuracy": result["accuracy"], "parallelism": round(result["parallelism"], 3),
                           "speedup": result["speedup"], "seconds": result["seconds"],
                           "baseline_accuracy": base.get("accuracy")}))


def register(app: typer.Typer):
    app.command()(quickstart)
