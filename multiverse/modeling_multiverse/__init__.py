"""The Multiverse model family. Everything in this folder travels with saved models as remote code.

Names load lazily: importing a light module (``tags``, ``parser``) neither imports the model nor registers
it with the Auto classes, so a process that only evaluates an exported folder loads the folder's own
remote code. The first access to a model or config class registers them.
"""

import importlib

_WHERE = {
    "MultiverseConfig": "configuration_multiverse", "MultiverseModel": "modeling_multiverse",
    "MultiverseForCausalLM": "modeling_multiverse", "Layout": "layout", "batch_layouts": "layout",
    "compute_layout": "layout", "layout_from_parse": "layout", "dense_mask": "masks",
    "multiverse_mask_function": "masks", "ParseResult": "parser", "StructureError": "parser", "parse": "parser",
    "well_formed_prefix": "parser", "TAGS": "tags", "tag_token_ids": "tags",
}
_MODEL_NAMES = {"MultiverseConfig", "MultiverseModel", "MultiverseForCausalLM"}
_registered = False
__all__ = sorted(_WHERE)


def _register():
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_multiverse import MultiverseConfig
    from .modeling_multiverse import MultiverseForCausalLM, MultiverseModel

    AutoConfig.register("multiverse", MultiverseConfig, exist_ok=True)
    AutoModel.register(MultiverseConfig, MultiverseModel, exist_ok=True)
    AutoModelForCausalLM.register(MultiverseConfig, MultiverseForCausalLM, exist_ok=True)
    MultiverseConfig.register_for_auto_class()
    MultiverseModel.register_for_auto_class("AutoModel")
    MultiverseForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    _registered = True


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _MODEL_NAMES:
        _register()
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
