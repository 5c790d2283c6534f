"""Names that moved between the transformers releases the project supports (pyproject.toml gives the range).

transformers 5.2x renamed the cache argument of the models' ``forward`` and of ``create_causal_mask`` from
``past_key_values`` to ``cache`` (the old name still works, with a FutureWarning, until 5.40). The names are
read from transformers' own signatures, so no forward here re-declares a parameter list that can drift.
"""

import inspect

from transformers import Qwen2Model
from transformers.masking_utils import create_causal_mask

_NAMES = ("cache", "past_key_values")


def _cache_name(function) -> str:
    parameters = inspect.signature(function).parameters  # follows functools.wraps through the decorators
    for name in _NAMES:
        if name in parameters:
            return name
    raise ImportError(f"{function.__qualname__} takes neither of {_NAMES}: this transformers release is outside "
                      "the range multiverse-hf supports (see pyproject.toml)")


# Keyword a model's forward takes the KV cache by (the engine passes its cache under it).
CACHE_KWARG = _cache_name(Qwen2Model.forward)
# Keyword of the cache in masking_utils.create_causal_mask and create_sliding_window_causal_mask.
MASK_CACHE_KWARG = _cache_name(create_causal_mask)


def find_cache(kwargs: dict):
    """The cache among a forward's keyword arguments, under the current or the deprecated name.

    The arguments go on to the parent's forward unchanged, so a caller's deprecated name still gets
    transformers' own FutureWarning; this only lets the backbone see the cache to lay out the new tokens.
    """
    for name in _NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None
