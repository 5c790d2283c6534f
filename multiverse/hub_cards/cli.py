"""``multiverse export`` and ``multiverse push``."""

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
           trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                  help="Let MODEL's own code (its auto_map) load it; off by default"),
           verify: bool = typer.Option(True, help="Reload OUT in a fresh process and run the card's snippet")):
    """Write a Hub-ready folder: weights, tokenizer, generation config, remote code and model card."""
    from .export import export_model, reload_in_fresh_process

    # A wrong argument or file is a user error: multiverse.cli prints it as one line (the traceback with --debug).
    fields = _card_fields(repo_id, base_model, dataset, license, tag, eval_results, recipe_config, recipe_command,
                          example_prompt)
    folder = export_model(model, out, dtype=dtype, overwrite=overwrite, verify=False,
                          trust_remote_code=trust_remote_code, **fields)
    typer.echo(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    if verify:
        result = reload_in_fresh_process(folder)
        stats = result["stats"]
        typer.echo(f"verified: reloads with trust_remote_code=True offline ({result['module']}), generated "
                   f"{stats['tokens']} tokens in {stats['steps']} steps")


def push(model: str = typer.Argument(..., help="An exported folder, a model folder/Hub id, or a dataset folder"),
         repo_id: str = typer.Argument(..., help="Target Hub repository (namespace/name)"),
         private: bool = typer.Option(None, "--private/--public", help="Visibility of a new repository"),
         token: str = typer.Option(None, help="Hub token (default: huggingface_hub's own: HF_TOKEN or the login)",
                                   show_default=False),
         include: list[str] = typer.Option(None, help="Also upload these files of MODEL (glob, repeatable); "
                                                      "weights, configs, tokenizer, code and card always go"),
         dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact files to upload; no network"),
         base_model: str = typer.Option(None), dataset: list[str] = typer.Option(None),
         license: str = typer.Option(None), tag: list[str] = typer.Option(None),
         eval_results: Path = typer.Option(None, exists=True, help=EVAL_HELP),
         recipe_config: Path = typer.Option(None, exists=True, dir_okay=False),
         recipe_command: str = typer.Option(None), example_prompt: str = typer.Option(None),
         verify: bool = typer.Option(True, help="Verify the export before uploading it")):
    """Push to the Hub with the model card (exporting first unless MODEL already is an export).

    Only an allow-list goes up: weights, config, generation config, tokenizer, remote code, card and the
    --include files. A training output folder (optimizer state, training_args.bin, checkpoint-*) is refused:
    run `multiverse export` on it first.
    """
    from .push import HubUnreachable
    from .push import push as run_push

    fields = _card_fields(None, base_model, dataset, license, tag, eval_results, recipe_config, recipe_command,
                          example_prompt)
    try:
        result = run_push(model, repo_id, private=private, token=token, include=include or (), dry_run=dry_run,
                          verify=verify, **fields)
    except HubUnreachable as err:
        typer.echo(f"error: cannot push {model} to {repo_id}: the Hub is unreachable: {err}. Nothing was "
                   f"uploaded; export with `multiverse export` now and push later from a connected machine.",
                   err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(f"dry run: pushing {model} to {repo_id} would upload {len(result)} files:")
        for name in result:
            typer.echo(f"  {name}")
        return
    typer.echo(f"pushed {model} to {repo_id}: {result}")


def register(app: typer.Typer):
    app.command()(export)
    app.command()(push)
