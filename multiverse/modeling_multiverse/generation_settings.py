"""Every ``GenerationConfig`` field, honoured or refused by parallel ``generate``.

The fields are read from ``GenerationConfig()`` itself, so a field a later transformers release adds is
refused (when set) until it is sorted into ``HONOURED`` or ``REFUSED`` (tests/test_generate_settings.py
fails on it). Honoured, and how:

- length: ``max_new_tokens`` (default 256; never exceeded, closing tags of a cut included), ``max_length``
  (prompt width + new, as HF counts it; ``max_new_tokens`` wins when both are set), ``min_new_tokens`` and
  ``min_length`` (eos held back until the output row has that many new tokens), ``max_time`` and
  ``stop_strings`` (stopping criteria, below);
- sampling: ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``top_h``, ``typical_p``,
  ``epsilon_cutoff``, ``eta_cutoff``, ``renormalize_logits`` (transformers' warpers, see ``sampling``), and
  ``repetition_penalty`` over each branch's visible history;
- processors that read ``input_ids``: ``no_repeat_ngram_size``, ``bad_words_ids``, ``sequence_bias``,
  ``suppress_tokens``, ``remove_invalid_values``, and custom ``logits_processor``; with custom
  ``stopping_criteria``, ``stop_strings`` and ``max_time`` they run per branch row with the ids that branch
  can see as ``input_ids`` (prompt, ancestors up to its fork, its own, left-padded). A row whose criterion
  fires ends its whole output row, which is then closed like a budget cut (event ``stopped``);
- ``num_return_sequences``: that many samples per prompt over one copy of the prompt's KV, rows prompt-major;
- ``output_scores``, ``output_logits``, ``return_dict_in_generate``: see ``generation_outputs``;
- ids: ``eos_token_id`` (one or several), ``pad_token_id`` (padding falls back to eos, as in HF);
  ``bos_token_id`` only matters without a prompt, which parallel generate requires;
- ``use_cache`` (the engine's cache; False is refused), ``disable_compile`` (nothing is compiled).

Everything else (beam search, assisted and prompt-lookup decoding, contrastive search, DoLa, constraints,
guidance, watermarking, encoder-decoder settings, forced bos/eos, attentions and hidden states, cache
settings, ...) raises ``ValueError`` naming the field and its value when set.
"""

from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.logits_process import (
    InfNanRemoveLogitsProcessor, NoBadWordsLogitsProcessor, NoRepeatNGramLogitsProcessor,
    SequenceBiasLogitsProcessor, SuppressTokensLogitsProcessor,
)
from transformers.generation.stopping_criteria import MaxTimeCriteria, StopStringCriteria

HONOURED = {
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "max_time", "stop_strings", "do_sample",
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "renormalize_logits", "no_repeat_ngram_size", "bad_words_ids", "sequence_bias",
    "suppress_tokens", "remove_invalid_values", "num_return_sequences", "output_scores", "output_logits",
    "return_dict_in_generate", "pad_token_id", "bos_token_id", "eos_token_id", "disable_compile",
    "transformers_version", "_from_model_config",
}
# Refused fields, with the values that mean "off" (accepted as they change nothing).
REFUSED = {
    "use_cache": (None, True), "num_beams": (None, 1), "num_beam_groups": (None, 1), "early_stopping": (None, False),
    "length_penalty": (None, 1.0), "diversity_penalty": (None, 0.0), "low_memory": (None, False),
    "penalty_alpha": (None, 0.0), "dola_layers": (None,), "constraints": (None,), "force_words_ids": (None,),
    "use_mtp": (None, False), "cache_implementation": (None,), "cache_config": (None,), "max_cache_len": (None,),
    "compile_config": (None,), "continuous_batching_config": (None,), "prefill_chunk_size": (None,),
    "encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0),
    "decoder_start_token_id": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,), "begin_suppress_tokens": (None,), "token_healing": (None, False),
    "guidance_scale": (None, 1.0), "watermarking_config": (None,), "output_attentions": (None, False),
    "output_hidden_states": (None, False), "is_assistant": (None, False), "num_assistant_tokens": (None,),
    "num_assistant_tokens_schedule": (None,), "assistant_confidence_threshold": (None,),
    "prompt_lookup_num_tokens": (None,), "max_matching_ngram_size": (None,), "assistant_early_exit": (None,),
    "assistant_lookbehind": (None,), "target_lookbehind": (None,), "assistant_ensemble_weight": (None,),
    "speculation_type": (None,),
}
DEFAULT_MAX_NEW_TOKENS = 256


def refuse_unsupported(generation_config):
    """``ValueError`` naming the first field parallel decoding cannot honour, with its value."""
    for name in GenerationConfig().to_dict():
        if name in HONOURED:
            continue
        value = getattr(generation_config, name, None)
        if not any(value is off or (off is not None and value == off) for off in REFUSED.get(name, (None,))):
            raise ValueError(f"parallel generate does not support {name}={value!r}; unset it, or decode with "
                             "multiverse_parallel=False (stock HF generate under the Multiverse mask)")


def resolve(generation_config, options: dict, prompt_width: int, logits_processor=None, stopping_criteria=None,
            device=None) -> dict:
    """Check the settings and turn them into the engine's options (lengths resolved, processor and criteria
    lists built); sets ``generation_config.max_new_tokens``."""
    gc = generation_config
    refuse_unsupported(gc)
    if gc.max_new_tokens is None:
        if gc.max_length is not None:
            if gc.max_length <= prompt_width:
                raise ValueError(f"max_length={gc.max_length} leaves no room after the prompt ({prompt_width} tokens, "
                                 "padding included); set max_new_tokens instead")
            gc.max_new_tokens = gc.max_length - prompt_width
        else:
            gc.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    _positive_int(gc.max_new_tokens, "max_new_tokens")
    min_new = max(gc.min_new_tokens or 0, (gc.min_length or 0) - prompt_width)
    n = gc.num_return_sequences if gc.num_return_sequences is not None else 1
    _positive_int(n, "num_return_sequences")
    if n > 1 and not gc.do_sample:
        raise ValueError(f"num_return_sequences={n} needs do_sample=True: greedy decoding would return {n} "
                         "identical rows")
    processors = LogitsProcessorList()
    if gc.remove_invalid_values:
        processors.append(InfNanRemoveLogitsProcessor())
    if gc.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(gc.no_repeat_ngram_size))
    if gc.bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(gc.bad_words_ids, gc.eos_token_id))
    if gc.sequence_bias is not None:
        processors.append(SequenceBiasLogitsProcessor(gc.sequence_bias))
    if gc.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(gc.suppress_tokens, device=device or "cpu"))
    processors.extend(logits_processor or [])
    criteria = StoppingCriteriaList()
    if gc.max_time is not None:
        criteria.append(MaxTimeCriteria(gc.max_time))
    if gc.stop_strings is not None:
        if options.get("tokenizer") is None:
            raise ValueError(f"stop_strings={gc.stop_strings!r} needs `tokenizer=` (the model's tokenizer) to find "
                             "the strings in token ids")
        criteria.append(StopStringCriteria(options["tokenizer"], gc.stop_strings))
    criteria.extend(stopping_criteria or [])
    return dict(min_new_tokens=min_new, logits_processor=processors or None, stopping_criteria=criteria or None,
                output_scores=bool(gc.output_scores), output_logits=bool(gc.output_logits))


def _positive_int(value, name: str):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")
