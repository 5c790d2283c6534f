"""``MultiverseForCausalLM.generate``: parallel by default, HF conventions on the outside.

Multiverse options are generation kwargs (or attributes of a ``GenerationConfig``):
``multiverse_parallel`` (True; False decodes autoregressively with the same mask), ``cuda_graphs``
(False; True replays decode steps from CUDA graphs, see ``decode_graphs``), ``max_branches``,
``max_depth``, ``max_path_tokens``, ``max_critical_path``, ``enforce_structure``, ``seed`` (one
generator per output row: seed + row, or a list of one seed per output row), ``tokenizer`` (to seed paths; needed by ``stop_strings``; with it, a tag spelled
with ordinary tokens is banned, so decoded output re-encodes to the same structure),
``forced_completions`` (replay given token ids through the engine, for parity tests and benchmarks; one
per prompt, or one per output row when ``num_return_sequences`` samples should replay different ones),
``max_batch_rows`` (continuous batching: KV-cache rows decoding at once, more prompts wait for a free row;
default: all, as free memory allows), ``kv_row_slots`` (KV slots per row; default: sized from the budget),
``max_live_samples`` (output rows decoding at once; with spare cache rows a prompt is admitted as soon as that
many samples have ended), ``share_prompt_rows`` (the ``num_return_sequences`` samples of a prompt in one cache row
over one copy of its KV, held until the last ends, or each in its own row, freed when it ends; default: own rows
when ``max_batch_rows`` is unset, the prompts do not all fit in memory at once and each is no longer than
``max_new_tokens``), ``on_prompt_done`` (a callable ``(prompt, results)`` called as each prompt finishes,
with one ``generation_outputs.PromptResult`` per sample: completion ids and statistics) and
``sequential_paths`` (False; True decodes a block's paths one after another through the same engine: the
autoregressive baseline with the parallel engine's code, batching included). With ``multiverse_parallel=False``
HF's generate decodes, and the options only the engine reads (``ENGINE_ONLY``) are refused when set.
The engine's typed options: ``engine_options.EngineOptions``.
Which ``GenerationConfig`` fields parallel decoding honours, and which it refuses: ``generation_settings``.
"""

import copy

from transformers import LogitsProcessorList

from .generation_settings import resolve
from .engine import ParallelEngine
from .engine_options import EngineOptions
from .generation_outputs import MultiverseGenerateOutput, build_output, tree_dict
from .seeds import Seeds
from .streamers import LinearStreamer
from .structure_processor import MultiverseStructureLogitsProcessor

__all__ = ["MultiverseGenerateOutput", "generate", "parallel_generate", "tree_dict"]

OPTION_DEFAULTS = dict(multiverse_parallel=True, cuda_graphs=False, max_branches=16, max_depth=4,
                       max_path_tokens=None, max_critical_path=None, enforce_structure=True, seed=None, tokenizer=None,
                       forced_completions=None, max_batch_rows=None, kv_row_slots=None,
                       max_live_samples=None, sequential_paths=False, on_prompt_done=None,
                       share_prompt_rows=None)


# Options only the parallel engine reads (autoregressive decoding refuses them when they are set).
ENGINE_ONLY = ("cuda_graphs", "max_critical_path", "seed", "forced_completions", "max_batch_rows", "kv_row_slots",
               "max_live_samples", "sequential_paths", "on_prompt_done", "share_prompt_rows")


def split_options(generation_config, kwargs: dict) -> dict:
    """Pop Multiverse options from ``kwargs``, falling back to ``generation_config`` attributes."""
    return {k: kwargs.pop(k) if k in kwargs else getattr(generation_config, k, default)
            for k, default in OPTION_DEFAULTS.items()}


def structure_processor(config, generation_config, options, seeds=None) -> MultiverseStructureLogitsProcessor:
    # The tokenizer lets the processor ban tags spelled with ordinary tokens; without one (the config's char table
    # seeds paths) that check is off.
    return MultiverseStructureLogitsProcessor(
        config.multiverse_tag_ids, max_branches=options["max_branches"], max_depth=options["max_depth"],
        max_path_tokens=options["max_path_tokens"], eos_token_id=generation_config.eos_token_id,
        grammar=options["enforce_structure"], seeds=seeds, tokenizer=options["tokenizer"])


def autoregressive_seeds(config, options) -> Seeds | None:
    """The engine's seeds for autoregressive decoding, where they can be built (a tokenizer or the char table)."""
    char_ids = getattr(config, "multiverse_seed_token_ids", None)
    return Seeds(options["tokenizer"], char_ids) if options["tokenizer"] is not None or char_ids else None


def generate(model, parent_generate, inputs=None, generation_config=None, logits_processor=None,
             stopping_criteria=None, streamer=None, **kwargs):
    """Parallel Multiverse decoding by default; ``multiverse_parallel=False`` decodes with ``parent_generate``
    (stock HF ``generate``) under the same mask, the structure processor enforcing the grammar and limits.

    Parallel decoding honours or refuses every ``GenerationConfig`` field (``generation_settings`` says how):

    - honoured: ``max_new_tokens`` (exact, closing tags of a cut included), ``max_length``, ``min_new_tokens``,
      ``min_length``, ``max_time``, ``stop_strings`` (with ``tokenizer=``), ``do_sample``, ``temperature``,
      ``top_k``, ``top_p``, ``min_p``, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``,
      ``renormalize_logits``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``bad_words_ids``,
      ``sequence_bias``, ``suppress_tokens``, ``remove_invalid_values``, ``num_return_sequences``,
      ``output_scores``, ``output_logits``, ``return_dict_in_generate``, ``eos_token_id`` (one or several),
      ``pad_token_id`` (else eos pads), ``bos_token_id``, ``use_cache=True``, ``disable_compile``;
    - refused with ``ValueError`` naming the field and value: beam search (``num_beams``, ``num_beam_groups``,
      ``length_penalty``, ``early_stopping``, ``diversity_penalty``, ``constraints``, ``force_words_ids``),
      assisted and prompt-lookup decoding, contrastive search, DoLa, guidance, watermarking, token healing,
      encoder-decoder and forced bos/eos settings, ``begin_suppress_tokens``,
      ``exponential_decay_length_penalty``, ``output_attentions``, ``output_hidden_states``, cache and compile
      settings, ``use_cache=False``, and model kwargs other than ``attention_mask``.

    Custom ``logits_processor`` and ``stopping_criteria`` run per branch row over the ids it can see. Returns
    ``sequences`` in the training layout, or with ``return_dict_in_generate=True`` a ``MultiverseGenerateOutput``
    (HF's ``sequences``/``scores``/``logits``, plus the per-row tree and statistics in ``multiverse``).
    """
    generation_config = copy.deepcopy(generation_config if generation_config is not None
                                      else model.generation_config)
    options = split_options(generation_config, kwargs)
    input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
    # Generation settings go into the config; what is left are model inputs (attention_mask, ...).
    model_kwargs = generation_config.update(**kwargs)
    if not options["multiverse_parallel"]:
        # HF's own generate decodes this mode: the engine's options would be silently ignored, so refuse them.
        for name in ENGINE_ONLY:
            if options[name] != OPTION_DEFAULTS[name]:
                raise ValueError(f"{name}={_short(options[name])} is an option of parallel decoding; "
                                 f"autoregressive decoding (multiverse_parallel=False) runs HF's generate, which has no such setting"
                                 + (" (use torch.manual_seed for sampling)" if name == "seed" else ""))
        # The limits always hold; enforce_structure=False lifts only the grammar's tag order.
        processors = LogitsProcessorList(logits_processor or [])
        # The engine's seeds are forced here too: a path cannot see its siblings, so not its own label.
        processors.append(structure_processor(model.config, generation_config, options,
                                              autoregressive_seeds(model.config, options)))
        if options["tokenizer"] is not None:
            model_kwargs["tokenizer"] = options["tokenizer"]
        return parent_generate(input_ids, generation_config=generation_config, logits_processor=processors,
                               stopping_criteria=stopping_criteria, streamer=streamer, **model_kwargs)
    attention_mask = model_kwargs.pop("attention_mask", None)
    for name, value in model_kwargs.items():
        raise ValueError(f"parallel generate does not take {name}={_short(value)}; see generation_api for its "
                         "options, or decode with multiverse_parallel=False")
    return parallel_generate(model, input_ids, attention_mask, generation_config, options, streamer=streamer,
                             logits_processor=logits_processor, stopping_criteria=stopping_criteria)


def parallel_generate(model, input_ids, attention_mask, generation_config, options, streamer=None,
                      logits_processor=None, stopping_criteria=None):
    if getattr(model.model, "has_sliding_layers", False):
        raise NotImplementedError("parallel generate does not support sliding-window layers")
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("parallel generate needs `input_ids` of shape [batch, prompt_length]")
    forced = options["forced_completions"]
    rows = input_ids.shape[0] * (generation_config.num_return_sequences or 1)
    if forced is not None and len(forced) not in (input_ids.shape[0], rows):
        raise ValueError(f"forced_completions has {len(forced)} entries for a batch of {input_ids.shape[0]} "
                         f"(give one per prompt, or one per output row: {rows})")
    settings = resolve(generation_config, options, input_ids.shape[1], logits_processor,
                                           stopping_criteria, input_ids.device)
    processor = structure_processor(model.config, generation_config, options)
    seeds = None if forced is not None else Seeds(options["tokenizer"], model.config.multiverse_seed_token_ids)
    if streamer is not None and not hasattr(streamer, "on_token"):
        if input_ids.shape[0] * (generation_config.num_return_sequences or 1) != 1:
            raise ValueError("a TextStreamer-style streamer works with one output row; use a branch streamer")
        streamer.put(input_ids.cpu())
        streamer = LinearStreamer(streamer)
    engine = ParallelEngine(model, generation_config, processor, seeds,
                            EngineOptions.from_options(options, streamer=streamer, **settings))
    samples = engine.run(input_ids, attention_mask, forced)
    return build_output(input_ids, samples, generation_config, model.config.vocab_size)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
