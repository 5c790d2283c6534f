"""Multiverse on Qwen2: the same weights, a structure-aware attention mask and parallel generation.

Only the backbone's mask (and the positions that go with it) differs from Qwen2, so it is the only
thing overridden. It lives in the backbone because TRL's fused-head path calls the backbone directly.
This folder is copied verbatim into every saved model as remote code: relative imports only.
"""

import torch
from transformers import Qwen2ForCausalLM, Qwen2Model
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .configuration_multiverse import MultiverseConfig
from .generation_api import generate as multiverse_generate
from .layout import batch_layouts, compute_layout
from .masks import dense_mask, multiverse_mask_function

FLEX_BLOCK = 128  # flex_attention may index the mask function past the sequence, up to a block multiple


def _is_prebuilt(attention_mask) -> bool:
    return isinstance(attention_mask, dict) or (attention_mask is not None and len(attention_mask.shape) == 4)


class MultiverseModel(Qwen2Model):
    config_class = MultiverseConfig

    def structure(self, input_ids, attention_mask, past_length: int, history_ids=None):
        """Layout of the rows in ``input_ids`` (or of ``history_ids`` when decoding with a cache)."""
        ids = history_ids if history_ids is not None else input_ids
        if past_length and history_ids is None:
            return None  # the history is gone: nothing to derive a layout from
        tag_ids = self.config.multiverse_tag_ids
        rows = ids.detach().cpu()
        masks = attention_mask.detach().cpu() if attention_mask is not None and attention_mask.ndim == 2 else None
        layouts = [compute_layout(rows[b], tag_ids, None if masks is None else masks[b, -rows.shape[1]:])
                   for b in range(rows.shape[0])]
        return batch_layouts(layouts)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        mv_segment_ids: torch.Tensor | None = None,
        mv_visibility: torch.Tensor | None = None,
        mv_history_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        r"""
        mv_segment_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Precomputed segment of every token (the training collator emits it). Needs `mv_visibility` and
            `position_ids`. Without it the structure is read from `input_ids`.
        mv_visibility (`torch.BoolTensor` of shape `(batch_size, num_segments, num_segments)`, *optional*):
            Which segment may see which.
        mv_history_ids (`torch.LongTensor`, *optional*):
            All ids so far, when `input_ids` holds only the newest tokens of a cached autoregressive decode.
        """
        # Multiverse: a prebuilt mask (the engine's, or a 4D/BlockMask from the user) passes through unchanged.
        if _is_prebuilt(attention_mask) or (input_ids is None and mv_segment_ids is None):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                                   use_cache=use_cache, **kwargs)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, q_len = inputs_embeds.shape[:2]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if mv_segment_ids is None:
            derived = self.structure(input_ids, attention_mask, past_length, mv_history_ids)
            if derived is None:
                raise ValueError("MultiverseModel needs mv_history_ids (all ids so far) to decode with a cache")
            mv_segment_ids, mv_visibility, positions = derived
            if position_ids is None or mv_history_ids is not None or past_length == 0:
                position_ids = positions[:, -q_len:]
        elif mv_visibility is None or position_ids is None:
            raise ValueError("mv_segment_ids needs mv_visibility and position_ids from the same layout")
        device = inputs_embeds.device
        kv_length = past_length + q_len
        # Always an explicit 2D mask: without one, transformers reads jumping position ids as packed documents.
        if attention_mask is None:
            attention_mask = torch.ones(batch, kv_length, dtype=torch.bool, device=device)
        padded = -(-kv_length // FLEX_BLOCK) * FLEX_BLOCK
        segments = torch.zeros(batch, padded, dtype=torch.long, device=device)
        segments[:, :kv_length] = mv_segment_ids[:, -kv_length:].to(device=device, dtype=torch.long)
        if not self.has_sliding_layers and self.config._attn_implementation in ("sdpa", "eager"):
            # A dense mask: the same closure, materialized for the new rows by the engine's gather.
            # create_causal_mask vmaps it four levels deep: ~4x slower decoding, and 25 ms against 2 ms for
            # a training batch of 24 x 224 tokens on a CPU.
            mapping = {"full_attention": self._gathered_mask(segments, mv_visibility.to(device), attention_mask,
                                                             past_length, q_len, inputs_embeds.dtype)}
        else:
            mask_function = multiverse_mask_function(segments, mv_visibility.to(device))
            mask_kwargs = dict(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               past_key_values=past_key_values, position_ids=position_ids.to(device),
                               and_mask_function=mask_function)
            mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
            if self.has_sliding_layers:
                mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        return super().forward(input_ids=None, attention_mask=mapping, position_ids=position_ids.to(device),
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               **kwargs)


    def _gathered_mask(self, segments, visibility, attention_mask, past_length: int, q_len: int, dtype):
        kv_length = past_length + q_len
        rows = torch.arange(past_length, kv_length, device=segments.device).expand(segments.shape[0], -1)
        mask = dense_mask(segments, visibility, rows, kv_length)
        mask = mask & attention_mask[:, None, None, :kv_length].to(torch.bool)
        if self.config._attn_implementation == "eager":
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        return mask


class MultiverseForCausalLM(Qwen2ForCausalLM):
    config_class = MultiverseConfig

    def __init__(self, config):
        super().__init__(config)
        # Multiverse: the backbone builds the structure mask.
        self.model = MultiverseModel(config)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # Multiverse: a cached autoregressive decode needs every id so far to lay out the new ones.
        inputs["mv_history_ids"] = input_ids
        return inputs

    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 streamer=None, **kwargs):
        """Parallel Multiverse decoding by default; ``multiverse_parallel=False`` decodes autoregressively
        under the same mask. See ``generation_api.generate`` for the options and the settings it honours."""
        return multiverse_generate(self, super().generate, inputs, generation_config, logits_processor,
                                   stopping_criteria, streamer, **kwargs)
