"""A next-token-table language model for engine tests (nanochat style): what the engine calls, nothing more.

``logits[b, q] = table[input_ids[b, q]]``, so the model's wishes are scripted per token. It also checks
that every query row can see its own key slot, which any correct mask allows.
"""

from types import SimpleNamespace

import torch

from multiverse.model_shapes import shape_config


class TableLM(torch.nn.Module):
    def __init__(self, tokenizer, table: dict | None = None, default: int | None = None):
        super().__init__()
        from multiverse.conversion import seed_token_ids
        from multiverse.modeling_multiverse import tag_token_ids

        self.config = shape_config("tiny", tag_token_ids(tokenizer), len(tokenizer))
        self.config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
        self.model = SimpleNamespace(has_sliding_layers=False)
        vocab = self.config.vocab_size
        self.table = torch.zeros(vocab, vocab)
        if default is not None:
            self.table[:, default] = 1.0
        for token, nxt in (table or {}).items():
            self.table[token, nxt] = 5.0
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids, position_ids=None, attention_mask=None, past_key_values=None, use_cache=None,
                logits_to_keep=0, cache=None, **kwargs):
        mask = attention_mask["full_attention"]
        kv = cache if cache is not None else past_key_values  # the engine uses compat.CACHE_KWARG
        if mask is None:  # a causal prefill: every row sees its own slot, and the scratch slot is not read
            assert kv.first_key == 1, "a prefill without a mask must skip the scratch slot"
        else:
            own = mask[torch.arange(mask.shape[0])[:, None], 0, torch.arange(mask.shape[2])[None], kv.write_slots]
            assert bool((own if own.dtype == torch.bool else own == 0).all()), "a query row cannot see its own slot"
        self.calls += 1
        logits = self.table[input_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)
