"""The Multiverse model family. Everything in this folder travels with saved models as remote code."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_multiverse import MultiverseConfig
from .layout import Layout, batch_layouts, compute_layout, layout_from_parse
from .masks import dense_mask, multiverse_mask_function
from .modeling_multiverse import MultiverseForCausalLM, MultiverseModel
from .parser import ParseResult, StructureError, parse, well_formed_prefix
from .tags import TAGS, tag_token_ids

AutoConfig.register("multiverse", MultiverseConfig, exist_ok=True)
AutoModel.register(MultiverseConfig, MultiverseModel, exist_ok=True)
AutoModelForCausalLM.register(MultiverseConfig, MultiverseForCausalLM, exist_ok=True)
MultiverseConfig.register_for_auto_class()
MultiverseModel.register_for_auto_class("AutoModel")
MultiverseForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "TAGS", "Layout", "MultiverseConfig", "MultiverseForCausalLM", "MultiverseModel", "ParseResult",
    "StructureError", "batch_layouts", "compute_layout", "dense_mask", "layout_from_parse",
    "multiverse_mask_function", "parse", "tag_token_ids", "well_formed_prefix",
]
