"""The recipes' argument parser: TRL's ``TrlParser`` plus packaged configs by name and a CUDA-less fallback.

- ``--config NAME`` takes a path, or the name of a shipped config (``qwen2.5-7b-instruct``, with or without
  ``.yaml``) from ``multiverse/trl_recipes/configs/``, so commands work from any directory.
- The shipped configs are written for CUDA: bf16 mixed precision, bfloat16 weights and FlexAttention. Without
  CUDA, those values *from the YAML file* become fp32 and sdpa, and one line says so; the same settings given
  on the command line are the user's explicit choice and stay (transformers or the recipe then refuses them).
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

# YAML value -> its CPU replacement; bf16 weights trained without mixed precision would be pure bf16.
CPU_FALLBACKS = {"bf16": (True, False), "fp16": (True, False), "dtype": ("bfloat16", "float32"),
                 "attn_implementation": ("flex_attention", "sdpa")}


def packaged_configs() -> dict[str, Path]:
    """Name (file name without .yaml) -> path of every shipped recipe config."""
    folder = resources.files("multiverse.trl_recipes").joinpath("configs")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def config_path(name: str) -> Path:
    """A config file path, or the path of the packaged config called ``name``."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    shipped = packaged_configs()
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    if stem in shipped:
        return shipped[stem]
    raise FileNotFoundError(f"--config {name}: no such file, nor a packaged config; packaged: "
                            f"{', '.join(sorted(shipped))}")


def cpu_fallbacks(config: dict, cuda: bool) -> dict:
    """The settings of ``config`` to replace on a machine without CUDA, as {key: (old, new)}."""
    if cuda:
        return {}
    return {k: (old, new) for k, (old, new) in CPU_FALLBACKS.items() if config.get(k) == old}


class RecipeParser:
    """Mixed into ``TrlParser`` (imported lazily, with TRL) by ``recipe_parser``."""

    cuda: bool | None = None  # None: ask torch

    def parse_args_and_config(self, args=None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        for i, arg in enumerate(args):
            if arg.startswith("--config="):
                args[i:i + 1] = ["--config", arg.split("=", 1)[1]]
        if "--config" in args:
            i = args.index("--config")
            if i + 1 >= len(args):
                raise ValueError("--config needs a YAML path or a packaged config name")
            args[i + 1] = str(config_path(args[i + 1]))
        return super().parse_args_and_config(args, **kwargs)

    def error(self, message):
        # argparse prints its usage first, and the usage of ~880 options is ~170 lines: say the error alone.
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")

    def set_defaults_with_config(self, **config):
        import torch

        cuda = torch.cuda.is_available() if self.cuda is None else self.cuda
        changes = cpu_fallbacks(config, cuda)
        if changes:
            config.update({k: new for k, (_, new) in changes.items()})
            said = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changes.items())
            print(f"multiverse train: no CUDA device, so the config's {said} (FlexAttention has no CPU backward; "
                  "bf16 weights would train as pure bf16). Pass them on the command line to override.",
                  file=sys.stderr)
        if not cuda:  # torch warns on every run that pinned memory needs an accelerator
            config.setdefault("dataloader_pin_memory", False)
        return super().set_defaults_with_config(**config)


def recipe_parser(name: str, help: str, subparsers: argparse._SubParsersAction | None = None,
                  prog: str | None = None):
    """A parser over (MultiverseScriptArguments, SFTConfig, ModelConfig), as trl's scripts build theirs."""
    from trl import ModelConfig, SFTConfig, TrlParser

    from .trainer import MultiverseScriptArguments

    dataclass_types = (MultiverseScriptArguments, SFTConfig, ModelConfig)
    if subparsers is not None:  # the subparsers' own class (TRL's CLI): paths only, no fallback
        return subparsers.add_parser(name, help=help, dataclass_types=dataclass_types)
    return type("MultiverseRecipeParser", (RecipeParser, TrlParser), {})(dataclass_types, prog=prog)
