"""``multiverse train``: run a recipe from a YAML config; further ``--key value`` pairs override it."""

from pathlib import Path

import typer

RECIPES = ("multiverse", "autoregressive")


def register(app: typer.Typer):
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train(ctx: typer.Context,
              config: Path = typer.Option(..., "--config", exists=True, dir_okay=False,
                                          help="Recipe YAML, e.g. multiverse/trl_recipes/configs/*.yaml"),
              recipe: str = typer.Option("multiverse", help="multiverse, or autoregressive for the baseline")):
        """Fine-tune with TRL: the Multiverse recipe, or the autoregressive baseline on the same data and config.

        Further --key value pairs (any SFTConfig, ModelConfig or recipe argument) override the YAML.
        """
        if recipe not in RECIPES:
            raise typer.BadParameter(f"{recipe!r}; choose one of {RECIPES}", param_hint="--recipe")
        if recipe == "multiverse":
            from . import sft_multiverse as module
        else:
            from . import sft_autoregressive as module
        parser = module.make_parser(prog=f"multiverse train --recipe {recipe}")
        module.main(*parser.parse_args_and_config(["--config", str(config), *ctx.args]))
