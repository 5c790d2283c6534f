"""Chunked cross-entropy: the causal-LM loss without the [L, vocab] logits.

At 32K tokens a Qwen2.5 vocabulary (151,936) makes the logits of one sequence 18.5 GiB in float32, more
than the rest of a 1.5B training step. Here the LM head runs on chunks of tokens under activation
checkpointing: each chunk's logits exist only while its loss (and later its gradient) is computed.

The head is called as a module (``lm_head(h)``), never through its ``.weight``, so FSDP and DeepSpeed
ZeRO-3 gather it through their usual module hooks. Only torch is imported: the GPU benchmark uses this
file on a machine without TRL.
"""

import functools
import types

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import CausalLMOutputWithPast

DEFAULT_CHUNK_TOKENS = 2048  # 2048 x 151,936 float32 logits: 1.2 GiB live per chunk


def _chunk_nll_sum(lm_head, hidden, labels):
    # float32 logsumexp: bf16 logits over a 150K vocabulary lose the small probabilities
    return F.cross_entropy(lm_head(hidden).float(), labels, reduction="sum")


def chunked_causal_lm_loss(hidden_states: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor,
                           num_items_in_batch=None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token NLL of ``labels`` ([B, L], -100 ignored) given the backbone's ``hidden_states`` [B, L, H].

    Labels are shifted here, as in transformers' ``ForCausalLMLoss``. The mean is over ``num_items_in_batch``
    when given (Trainer's count across gradient accumulation), else over this batch's label tokens.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: needs a positive number of tokens per chunk")
    if hidden_states.shape[:2] != labels.shape:
        raise ValueError(f"hidden_states {tuple(hidden_states.shape)} and labels {tuple(labels.shape)} disagree on "
                         "[batch, length]")
    shifted = labels[:, 1:].to(hidden_states.device)
    keep = shifted != -100
    # Only positions with a label are projected: the prompt and padding cost nothing.
    hidden = hidden_states[:, :-1][keep]
    targets = shifted[keep]
    total = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled() and hidden.requires_grad:
            total = total + checkpoint(_chunk_nll_sum, lm_head, hidden[part], targets[part], use_reentrant=False)
        else:
            total = total + _chunk_nll_sum(lm_head, hidden[part], targets[part])
    if targets.shape[0] == 0:
        # Keep the loss attached to the graph: a batch whose labels were all cut off still calls backward().
        # An empty sum, not hidden.sum() * 0, which is NaN when any hidden state is inf.
        total = total + hidden_states[:, :0].sum()
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    # Clamped as TRL does: a batch (or accumulation window) without label tokens is a finite 0, not 0 / 0.
    return total / torch.as_tensor(denom, device=total.device, dtype=total.dtype).clamp(min=1)


def add_chunked_lm_head(model, chunk_tokens: int = DEFAULT_CHUNK_TOKENS):
    """Patch ``model.forward``: ``model(..., chunked_ce_labels=labels)`` returns only the chunked loss.

    Without ``chunked_ce_labels`` the original forward runs, so generation and evaluation are unchanged.
    The loss is computed inside ``forward`` so that FSDP/DeepSpeed wrappers around the model stay in charge.
    """
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        raise ValueError("add_chunked_lm_head supports LM heads without bias (the Qwen2 family)")
    original_forward = model.forward

    @functools.wraps(type(model).forward)  # keep the signature: generate() inspects it
    def forward(self, *args, chunked_ce_labels=None, num_items_in_batch=None, **kwargs):
        if chunked_ce_labels is None:
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return original_forward(*args, **kwargs)
        if kwargs.pop("labels", None) is not None:
            raise ValueError("pass the labels as chunked_ce_labels only; `labels` would build the full logits")
        kwargs["use_cache"] = False
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state
        loss = chunked_causal_lm_loss(hidden, self.get_output_embeddings(), chunked_ce_labels, num_items_in_batch,
                                      chunk_tokens)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)
    model._multiverse_chunked_lm_head = chunk_tokens
    return model
