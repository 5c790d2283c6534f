"""TRL training recipes: Multiverse SFT, the autoregressive baseline, a curriculum, configs per model size.

Importing this package does not import TRL: the collator and the chunked loss are also used where TRL is
not installed (``benchmarks/train_step.py`` on the GPU machine). The recipes are
``multiverse.trl_recipes.sft_multiverse`` and ``multiverse.trl_recipes.sft_autoregressive``.
"""

from .collator import MultiverseDataCollator
from .loss import add_chunked_lm_head, chunked_causal_lm_loss

__all__ = ["MultiverseDataCollator", "add_chunked_lm_head", "chunked_causal_lm_loss"]
