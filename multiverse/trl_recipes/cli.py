"""``multiverse train``: run a recipe from a YAML config; further ``--key value`` pairs override it."""

import typer

RECIPES = ("multiverse", "autoregressive")
# The recipe options a first run touches; `--help-all` prints all of them (~880, TRL's and transformers').
KEY_OPTIONS = ("model_name_or_path", "dataset_name", "output_dir", "max_length", "max_steps", "num_train_epochs",
               "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "loss_impl",
               "attn_implementation", "dtype", "bf16", "use_cpu", "curriculum")
EPILOG = ("Recipe options (override the YAML as --key value): " + ", ".join(f"--{k}" for k in KEY_OPTIONS)
          + ". All of them: multiverse train --help-all [WORD...] (only the options whose name or help has "
            "every WORD).")


def _module(recipe: str):
    if recipe not in RECIPES:
        raise typer.BadParameter(f"{recipe!r}; choose one of {RECIPES}", param_hint="--recipe")
    if recipe == "multiverse":
        from . import sft_multiverse as module
    else:
        from . import sft_autoregressive as module
    return module


def recipe_help(parser, words=()) -> str:
    """The parser's help; with ``words``, only the options whose flags or help contain every word."""
    if not words:
        return parser.format_help()
    words = [w.lower() for w in words]
    formatter = parser._get_formatter()
    formatter.start_section(f"options matching {' '.join(words)}")
    for action in parser._actions:
        text = " ".join([*action.option_strings, str(action.help or "")]).lower()
        if action.option_strings and all(w in text for w in words):
            formatter.add_argument(action)
    formatter.end_section()
    return formatter.format_help()


def register(app: typer.Typer):
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, epilog=EPILOG)
    def train(ctx: typer.Context,
              config: str = typer.Option(None, "--config", help="Recipe YAML: a path, or a packaged config's "
                                         "name (qwen2.5-0.5b-instruct, qwen2.5-1.5b-instruct, "
                                         "qwen2.5-1.5b-instruct-curriculum, qwen2.5-7b-instruct, "
                                         "qwen2.5-32b-instruct)"),
              recipe: str = typer.Option("multiverse", help="multiverse, or autoregressive for the baseline"),
              help_all: bool = typer.Option(False, "--help-all", help="Print the recipe's options and exit")):
        """Fine-tune with TRL: the Multiverse recipe, or the autoregressive baseline on the same data and config.

        Further --key value pairs (any SFTConfig, ModelConfig or recipe argument) override the YAML. Without
        CUDA, a config's bf16, bfloat16 weights and flex_attention become fp32 and sdpa (one line says so).
        """
        module = _module(recipe)
        parser = module.make_parser(prog=f"multiverse train --recipe {recipe}")
        if help_all:
            typer.echo(recipe_help(parser, ctx.args))
            return
        if config is None:
            raise typer.BadParameter("give a recipe YAML path or a packaged config name", param_hint="--config")
        module.main(*parser.parse_args_and_config(["--config", config, *ctx.args]))
