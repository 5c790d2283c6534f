"""The engine's options, typed: what ``generation_api`` resolved from the ``GenerationConfig`` and the kwargs."""

import os
from dataclasses import dataclass, fields

import torch


@dataclass
class EngineOptions:
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    num_samples: int = 1  # num_return_sequences: samples of a prompt share its cache row
    max_critical_path: int | None = None
    logits_processor: object = None  # HF processors and stopping criteria, run per branch row (choosing)
    stopping_criteria: object = None
    output_logits: bool = False  # record the logits at every written token (parity)
    output_scores: bool = False
    streamer: object = None  # a branch streamer (on_token/on_fork/on_merge; optional on_prompt_start/end)
    seed: int | list | None = None  # one generator per output row: seed + row, or a list of one seed per row
    # Called as each prompt finishes, before generate returns: (prompt index, [PromptResult per sample]). Finished
    # work reaches the caller while the rest of a continuous batch decodes (the evaluation runner records it).
    on_prompt_done: object = None
    cuda_graphs: bool = False  # decode steps replayed from CUDA graphs (decode_graphs)
    # The CUDA graphs' static-shape step run eagerly: how CPU tests check that step against the eager one.
    static_decode: bool = False
    # Continuous batching: cache rows decoding at once (None: every prompt, as far as free memory allows); more
    # prompts wait and are admitted as rows free up. A row holds a prompt and its samples, or one sample of it
    # (share_prompt_rows).
    max_batch_rows: int | None = None
    # KV slots per cache row (None: sized from the budget, prompt + samples * max_new_tokens, never overflows);
    # a prompt whose row fills up ends with the event ``kv_row_full``.
    kv_row_slots: int | None = None
    # Output rows decoding at once (None: no limit beyond the cache rows). The samples of a prompt share its
    # cache row until the last ends: with spare cache rows (max_batch_rows above max_live_samples / samples), a
    # new prompt is admitted as soon as enough samples have ended, not only when whole prompts have.
    max_live_samples: int | None = None
    # Samples of a prompt in one cache row (True: its KV once, the row held until the last sample ends) or each in a
    # row of its own (False: the prompt's KV once per sample, each row freed as soon as its sample ends). None: own
    # rows when the rows come from free memory (max_batch_rows unset, whose meaning stays cache rows), not every
    # prompt fits at once, and a prompt is no longer than max_new_tokens (a copy costs at most one sample's
    # tokens); else shared.
    share_prompt_rows: bool | None = None
    # A block's paths one after another (one branch live at a time): autoregressive decoding through this engine.
    sequential_paths: bool = False

    @classmethod
    def from_options(cls, options: dict, **overrides) -> "EngineOptions":
        """The engine's fields out of generate's options dict (other keys belong to the structure processor)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in {**options, **overrides}.items() if k in names and v is not None}
        for name in ("max_batch_rows", "kv_row_slots", "max_live_samples"):
            value = values.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r}: must be a positive integer (or None for the default)")
        return cls(**values)

    @property
    def record_chosen(self) -> bool:
        """Keep what each token was chosen from (HF's ``scores``/``logits``)."""
        return self.output_scores or self.output_logits

    @property
    def static(self) -> bool:
        return self.cuda_graphs or self.static_decode


def default_batch_rows(model, prompts: int, capacity: int, device) -> int:
    """Cache rows for ``prompts`` prompts: all of them where half the free memory holds their KV, else fewer."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = next(model.parameters()).dtype
    row_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * capacity * dtype.itemsize
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no sysconf: assume the whole batch fits
            return prompts
    return max(1, min(prompts, int(free // 2 // max(1, row_bytes))))
