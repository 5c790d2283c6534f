"""Multiverse on Qwen2: the same weights, a structure-aware attention mask and parallel generation.

Only the backbone's mask (and the positions that go with it) differs from Qwen2, so it is the only
thing overridden. It lives in the backbone because TRL's fused-head path calls the backbone directly.
This folder is copied verbatim into every saved model as remote code: relative imports only.
"""

import torch
from transformers import DynamicCache, Qwen2ForCausalLM, Qwen2Model
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .cached_layout import FLEX_BLOCK, layout_for_cache
from .compat import CACHE_KWARG, MASK_CACHE_KWARG, find_cache
from .configuration_multiverse import MultiverseConfig
from .generation_api import generate as multiverse_generate
from .layout import batch_layouts, compute_layout
from .masks import additive_mask, dense_mask, multiverse_mask_function


def _is_prebuilt(attention_mask) -> bool:
    return isinstance(attention_mask, dict) or (attention_mask is not None and len(attention_mask.shape) == 4)


class MultiverseModel(Qwen2Model):
    config_class = MultiverseConfig

    def structure(self, input_ids, attention_mask):
        """Layout of the rows in ``input_ids`` (the whole sequence: no cache)."""
        tag_ids = self.config.multiverse_tag_ids
        rows = input_ids.detach().cpu()
        masks = attention_mask.detach().cpu() if attention_mask is not None and attention_mask.ndim == 2 else None
        rule = self.config.multiverse_position_rule
        layouts = [compute_layout(rows[b], tag_ids, None if masks is None else masks[b, -rows.shape[1]:], rule)
                   for b in range(rows.shape[0])]
        return batch_layouts(layouts)

    # Multiverse: only the three structure inputs are declared. Everything else, the cache above all (its name
    # moved between transformers releases, see compat.py), passes through **kwargs to the parent unchanged.
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        *,
        mv_segment_ids: torch.Tensor | None = None,
        mv_visibility: torch.Tensor | None = None,
        mv_history_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        r"""
        Takes every argument of `Qwen2Model.forward`. When the structure is read from `input_ids` (no
        `mv_segment_ids`), the layout's position ids replace `position_ids`: positions are part of the structure.

        mv_segment_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Precomputed segment of every token (the training collator emits it). Needs `mv_visibility` and
            `position_ids`. Without it the structure is read from `input_ids`.
        mv_visibility (`torch.BoolTensor` of shape `(batch_size, num_segments, num_segments)`, *optional*):
            Which segment may see which.
        mv_history_ids (`torch.LongTensor`, *optional*):
            All ids so far, when `input_ids` holds only the newest tokens of a cached decode. The cache carries
            the layout of what it holds; these ids check it (beam search reorders rows, assisted decoding
            crops the cache) and rebuild it when it is stale.
        """
        inputs_embeds = kwargs.pop("inputs_embeds", None)
        # Multiverse: a prebuilt mask (the engine's, or a 4D/BlockMask from the user) passes through unchanged.
        if _is_prebuilt(attention_mask):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, **kwargs)
        if input_ids is None and mv_segment_ids is None:
            # The structure is read from the ids; embeddings alone would get a plain causal mask, silently.
            raise ValueError("MultiverseModel: inputs_embeds without input_ids needs the layout (mv_segment_ids, "
                             "mv_visibility, position_ids) or a prebuilt attention mask")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, q_len = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        cache = find_cache(kwargs)
        if cache is None and kwargs.get("use_cache"):
            # The parent would create this cache itself; creating it here lets it carry the layout.
            cache = kwargs[CACHE_KWARG] = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        if mv_segment_ids is not None:
            if mv_visibility is None or position_ids is None:
                raise ValueError("mv_segment_ids needs mv_visibility and position_ids from the same layout")
            segments, visibility = _padded(mv_segment_ids, past_length + q_len, device), mv_visibility.to(device)
        elif cache is not None:
            if getattr(cache, "is_compileable", False):
                # A static cache reads keys up to its full length, which the mask and its layout do not span.
                raise ValueError(f"MultiverseModel: cached decoding under the Multiverse mask takes a dynamic cache, "
                                 f"not {type(cache).__name__} (generate's cache_implementation='static')")
            # Cached decoding: the layout of the cache's tokens rides on the cache; only the new ones are parsed.
            state, positions = layout_for_cache(cache, self.config, input_ids, past_length,
                                                mv_history_ids, attention_mask if _is_2d(attention_mask) else None)
            segments, visibility, position_ids = state.segments, state.visibility, positions
        else:
            segment_ids, visibility, positions = self.structure(input_ids, attention_mask)
            segments, visibility, position_ids = _padded(segment_ids, q_len, device), visibility.to(device), positions
        position_ids = position_ids.to(device)
        kv_length = past_length + q_len
        # Always an explicit 2D mask: without one, transformers reads jumping position ids as packed documents.
        if attention_mask is None:
            attention_mask = torch.ones(batch, kv_length, dtype=torch.bool, device=device)
        if cache is not None and mv_segment_ids is None and state.open_view:
            # Every new token sees every real token before it (top-level text, a conclusion after its paths):
            # the parent's causal + padding mask is the Multiverse mask, and its fastest one. Without padding
            # that is no mask at all, as HF's generate passes it (with a cache, transformers never reads
            # jumping positions as packed sequences).
            mapping = attention_mask if state.padded else None
        elif not self.has_sliding_layers and self.config._attn_implementation in ("sdpa", "eager"):
            # A dense mask: the same closure, materialized for the new rows by the engine's gather.
            # create_causal_mask vmaps it four levels deep: ~4x slower decoding, and 25 ms against 2 ms for
            # a training batch of 24 x 224 tokens on a CPU.
            mapping = {"full_attention": self._gathered_mask(segments, visibility, attention_mask, past_length,
                                                             q_len, inputs_embeds.dtype)}
        else:
            mask_function = multiverse_mask_function(segments, visibility)
            mask_kwargs = {"config": self.config, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                           MASK_CACHE_KWARG: cache, "position_ids": position_ids,
                           "and_mask_function": mask_function}
            mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
            if self.has_sliding_layers:
                mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        return super().forward(input_ids=None, attention_mask=mapping, position_ids=position_ids,
                               inputs_embeds=inputs_embeds, **kwargs)

    def _gathered_mask(self, segments, visibility, attention_mask, past_length: int, q_len: int, dtype):
        kv_length = past_length + q_len
        rows = torch.arange(past_length, kv_length, device=segments.device).expand(segments.shape[0], -1)
        mask = dense_mask(segments, visibility, rows, kv_length)
        mask = mask & attention_mask[:, None, None, -kv_length:].to(torch.bool)
        if self.config._attn_implementation == "eager":
            return additive_mask(mask, dtype)
        return mask


def _is_2d(attention_mask) -> bool:
    return attention_mask is not None and attention_mask.ndim == 2


def _padded(segment_ids, length: int, device):
    """[B, L] segment ids of the last ``length`` tokens, padded with void to a FLEX_BLOCK multiple: flex_attention
    may index the mask function past the sequence."""
    padded = -(-length // FLEX_BLOCK) * FLEX_BLOCK
    segments = torch.zeros(segment_ids.shape[0], padded, dtype=torch.long, device=device)
    segments[:, :length] = segment_ids[:, -length:].to(device=device, dtype=torch.long)
    return segments


class MultiverseForCausalLM(Qwen2ForCausalLM):
    config_class = MultiverseConfig

    def __init__(self, config):
        super().__init__(config)
        # Multiverse: the backbone builds the structure mask.
        self.model = MultiverseModel(config)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # Multiverse: the cache carries the layout of what it holds; every id so far lets the backbone check it
        # (beam search reorders rows) and rebuild it. A reference, not a copy.
        inputs["mv_history_ids"] = input_ids
        if not _is_prebuilt(kwargs.get("attention_mask")):
            # HF prebuilds a plain causal mask for compileable (static) caches, which would pass through the
            # backbone unchanged; with the 2D one (or none) the backbone builds the mask (and refuses a static cache).
            inputs["attention_mask"] = kwargs.get("attention_mask")
        return inputs

    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 streamer=None, **kwargs):
        """Parallel Multiverse decoding by default; ``multiverse_parallel=False`` decodes autoregressively
        under the same mask. See ``generation_api.generate`` for the options and the settings it honours."""
        return multiverse_generate(self, super().generate, inputs, generation_config, logits_processor,
                                   stopping_criteria, streamer, **kwargs)
