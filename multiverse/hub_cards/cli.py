"""``multiverse export`` and ``multiverse push``."""

import json
from pathlib import Path

import typer


def _card_fields(repo_id, base_model, dataset, license, tag, eval_results, recipe_config, recipe_command,
                 example_prompt) -> dict:
    fields = dict(repo_id=repo_id, base_model=base_model, datasets=dataset or None, license=license,
                  tags=tuple(tag or ()), example_prompt=example_prompt)
    if eval_results is not None:
        from ..evaluation.report import read_results

        fields["eval_results"] = read_results(eval_results)
    if recipe_config is not None or recipe_command is not None:
        fields["recipe"] = dict(command=recipe_command,
                                config=recipe_config.read_text(encoding="utf-8") if recipe_config else None)
    return {k: v for k, v in fields.items() if v not in (None, (), [])}


def _fail(err: Exception):
    # A wrong argument or file is the user's to fix: say what is wrong, without a traceback.
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1) from None


USER_ERRORS = (ValueError, OSError)  # OSError: a missing folder, file or Hub id
REPO_HELP = "Hub id the card's usage snippet loads (namespace/name)"
EVAL_HELP = "results.json (or its folder) from `multiverse eval`, for the card's evaluation table"


def export(model: str = typer.Argument(..., help="Multiverse model folder or Hub id (a trained or converted model)"),
           out: Path = typer.Argument(..., help="Folder to write the Hub-ready export to"),
           repo_id: str = typer.Option(None, help=REPO_HELP),
           base_model: str = typer.Option(None, help="Hub id of the model it was fine-tuned from"),
           dataset: list[str] = typer.Option(None, help="Hub id of a training dataset (repeatable)"),
           license: str = typer.Option(None, help="License id, e.g. apache-2.0 (default: the source card's)"),
           tag: list[str] = typer.Option(None, help="Extra card tag (repeatable)"),
           eval_results: Path = typer.Option(None, exists=True, help=EVAL_HELP),
           recipe_config: Path = typer.Option(None, exists=True, dir_okay=False, help="Training YAML to show"),
           recipe_command: str = typer.Option(None, help="The training command to show in the card"),
           example_prompt: str = typer.Option(None, help="The user message of the card's usage snippet"),
           dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32"),
           overwrite: bool = typer.Option(False, help="Write into a non-empty OUT"),
           verify: bool = typer.Option(True, help="Reload OUT in a fresh process and run the card's snippet")):
    """Write a Hub-ready folder: weights, tokenizer, generation config, remote code and model card."""
    from .export import export_model, reload_in_fresh_process

    try:
        fields = _card_fields(repo_id, base_model, dataset, license, tag, eval_results, recipe_config,
                              recipe_command, example_prompt)
        folder = export_model(model, out, dtype=dtype, overwrite=overwrite, verify=False, **fields)
    except USER_ERRORS as err:
        _fail(err)
    typer.echo(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    if verify:
        result = reload_in_fresh_process(folder)
        stats = result["stats"]
        typer.echo(f"verified: reloads with trust_remote_code=True offline ({result['module']}), generated "
                   f"{stats['tokens']} tokens in {stats['steps']} steps")


def push(model: str = typer.Argument(..., help="An exported folder, a model folder/Hub id, or a dataset folder"),
         repo_id: str = typer.Argument(..., help="Target Hub repository (namespace/name)"),
         private: bool = typer.Option(None, "--private/--public", help="Visibility of a new repository"),
         token: str = typer.Option(None, envvar="HF_TOKEN", help="Hub token (default: HF_TOKEN or the cached login)"),
         base_model: str = typer.Option(None), dataset: list[str] = typer.Option(None),
         license: str = typer.Option(None), tag: list[str] = typer.Option(None),
         eval_results: Path = typer.Option(None, exists=True, help=EVAL_HELP),
         recipe_config: Path = typer.Option(None, exists=True, dir_okay=False),
         recipe_command: str = typer.Option(None), example_prompt: str = typer.Option(None),
         verify: bool = typer.Option(True, help="Verify the export before uploading it")):
    """Push to the Hub with the model card (exporting first unless MODEL already is an export)."""
    from .push import HubUnreachable
    from .push import push as run_push

    try:
        fields = _card_fields(None, base_model, dataset, license, tag, eval_results, recipe_config, recipe_command,
                              example_prompt)
        url = run_push(model, repo_id, private=private, token=token, verify=verify, **fields)
    except USER_ERRORS as err:
        _fail(err)
    except HubUnreachable as err:
        typer.echo(f"error: cannot push {model} to {repo_id}: the Hub is unreachable: {err}. Nothing was "
                   f"uploaded; export with `multiverse export` now and push later from a connected machine.",
                   err=True)
        raise typer.Exit(2) from None
    typer.echo(f"pushed {model} to {repo_id}: {url}")


def register(app: typer.Typer):
    app.command()(export)
    app.command()(push)
