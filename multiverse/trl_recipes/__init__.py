"""TRL training recipes: Multiverse SFT, the autoregressive baseline, a curriculum, configs per model size.

Importing this package does not import TRL, nor torch: ``multiverse.cli`` imports it at every start. The
collator and the chunked loss (also used where TRL is not installed, such as ``benchmarks/train_step.py``
on the GPU machine) load on first use. The recipes are ``multiverse.trl_recipes.sft_multiverse`` and
``multiverse.trl_recipes.sft_autoregressive``.
"""

import importlib

_WHERE = {"MultiverseDataCollator": "collator", "add_chunked_lm_head": "loss", "chunked_causal_lm_loss": "loss"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
