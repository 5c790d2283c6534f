"""What the recipes share: their script arguments, model loading and an SFTTrainer with a loss option.

``MultiverseSFTTrainer`` is TRL's ``SFTTrainer`` plus one option, ``loss_impl``:
- ``"trl"`` (default): TRL's own fused LM head, which never builds the full [L, vocab] logits either, and logs
  TRL's token counts, entropy and accuracy;
- ``"chunked"``: ``loss.add_chunked_lm_head``, pure torch, the path ``benchmarks/train_step.py`` measures on a
  GPU without TRL (``benchmarks/loss.py`` compares the two). It overrides ``compute_loss``, the extension point
  TRL 1.x documents (its ``compute_loss_func`` hook is deprecated and is handed the full logits), and logs only
  the loss: TRL's metrics are TRL's private state.
Both recipes (Multiverse and the autoregressive baseline) use it, so they train with the same loss.
"""

from dataclasses import dataclass, field

import torch
from trl import ScriptArguments, SFTTrainer

from ..hub_cards.loading import resolve_model_path
from .loss import DEFAULT_CHUNK_TOKENS, add_chunked_lm_head

LOSS_IMPLS = ("trl", "chunked")
MASK_ATTENTIONS = ("flex_attention", "sdpa", "eager")  # the ones create_causal_mask builds our mask for


@dataclass
class MultiverseScriptArguments(ScriptArguments):
    """``trl.ScriptArguments`` (``dataset_name`` also takes a local folder or .jsonl/.parquet file) plus:"""

    loss_impl: str = field(default="trl", metadata={
        "help": "Cross-entropy without full logits: 'trl' (TRL's fused LM head) or 'chunked' (ours, pure torch).",
        "choices": list(LOSS_IMPLS)})
    ce_chunk_tokens: int = field(default=DEFAULT_CHUNK_TOKENS, metadata={
        "help": "Tokens per LM-head chunk for loss_impl='chunked'; each chunk's logits are chunk x vocab floats."})
    curriculum: list[str] | None = field(default=None, metadata={
        "help": "Stages 'FRACTION:EPOCHS' of Multiverse-form examples, e.g. 0.0:1 0.5:1 1.0:1 (Multiverse recipe; "
                "needs num_train_epochs=1)."})
    sequential_column: str | None = field(default=None, metadata={
        "help": "Column with each example's sequential text, for the sequential form; default: strip the tags."})


def check_script_args(script_args: MultiverseScriptArguments):
    if script_args.loss_impl not in LOSS_IMPLS:
        raise ValueError(f"loss_impl={script_args.loss_impl!r}; choose one of {LOSS_IMPLS}")
    if script_args.loss_impl != "chunked" and script_args.ce_chunk_tokens != DEFAULT_CHUNK_TOKENS:
        raise ValueError(f"ce_chunk_tokens={script_args.ce_chunk_tokens} applies to loss_impl='chunked' only "
                         f"(loss_impl={script_args.loss_impl!r})")
    if script_args.ce_chunk_tokens < 1:
        raise ValueError(f"ce_chunk_tokens={script_args.ce_chunk_tokens}: must be a positive number of tokens")
    if not script_args.dataset_name:
        raise ValueError("dataset_name is required: a Hub id, a save_to_disk folder or a .jsonl/.parquet file")


def check_publishing(training_args):
    if training_args.push_to_hub:
        # Trainer.push_to_hub uploads output_dir as it is: training_args.bin (which holds hub_token) included.
        raise ValueError("push_to_hub=True would upload the output folder as the Trainer leaves it, "
                         "training_args.bin (with hub_token) included; train without it, then publish with "
                         "`multiverse export OUTPUT_DIR EXPORT --repo-id ID` and `multiverse push EXPORT ID`")


def _from_pretrained_kwargs(model_args, training_args, default_attn: str) -> dict:
    from trl import get_quantization_config

    kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
                  dtype=model_args.dtype or "auto", attn_implementation=model_args.attn_implementation or default_attn)
    quantization = get_quantization_config(model_args)  # --load_in_4bit/8bit, as TRL's own sft script reads them
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    # The recipes build the model themselves, so SFTTrainer must not try to apply these again.
    kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = None
    return kwargs


def load_multiverse_model(model_args, training_args):
    """(MultiverseForCausalLM, tokenizer) from a Multiverse checkpoint, or from a Qwen2 one converted in memory."""
    from transformers import AutoConfig, AutoTokenizer

    from ..conversion import add_multiverse_tokens
    from ..modeling_multiverse import MultiverseConfig, MultiverseForCausalLM, tag_token_ids

    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required: a Qwen2-family or Multiverse checkpoint")
    name = resolve_model_path(model_args.model_name_or_path, "model_name_or_path")
    kwargs = _from_pretrained_kwargs(model_args, training_args,
                                     "flex_attention" if torch.cuda.is_available() else "sdpa")
    attn = kwargs["attn_implementation"]
    if attn not in MASK_ATTENTIONS:
        raise ValueError(f"attn_implementation={attn!r} cannot apply the Multiverse mask; use one of {MASK_ATTENTIONS}")
    if attn == "flex_attention" and not torch.cuda.is_available():
        raise ValueError("attn_implementation='flex_attention' needs CUDA (FlexAttention has no CPU backward); "
                         "use 'sdpa' on the CPU")
    common = dict(revision=kwargs["revision"], trust_remote_code=kwargs["trust_remote_code"])
    config = AutoConfig.from_pretrained(name, **common)
    tokenizer = AutoTokenizer.from_pretrained(name, **common)
    if config.model_type == "multiverse":
        model = MultiverseForCausalLM.from_pretrained(name, **kwargs)
    elif config.model_type == "qwen2":
        # The same conversion as `multiverse convert`, kept in memory: tags added, their embeddings initialized.
        fields = {k: v for k, v in config.to_dict().items()
                  if k not in ("model_type", "architectures", "auto_map", "transformers_version")}
        model = MultiverseForCausalLM.from_pretrained(name, config=MultiverseConfig(**fields), **kwargs)
        add_multiverse_tokens(tokenizer, model)
    else:
        raise ValueError(f"{name} is a {config.model_type!r} model; the Multiverse recipe takes Qwen2-family or "
                         "Multiverse checkpoints")
    tags = tag_token_ids(tokenizer)
    if tags != list(model.config.multiverse_tag_ids):
        # A mismatch would lay out every example wrongly without any error later on.
        raise ValueError(f"the tokenizer's tag ids {tags} differ from config.multiverse_tag_ids "
                         f"{model.config.multiverse_tag_ids}; re-run `multiverse convert`")
    return model, tokenizer


def load_causal_model(model_args, training_args):
    """(model, tokenizer) for the autoregressive baseline: the checkpoint as it is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required")
    name = resolve_model_path(model_args.model_name_or_path, "model_name_or_path")
    kwargs = _from_pretrained_kwargs(model_args, training_args, "sdpa")
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=kwargs["revision"],
                                              trust_remote_code=kwargs["trust_remote_code"])
    return model, tokenizer


class MultiverseSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with ``loss_impl`` ('trl' or 'chunked'); everything else is TRL's."""

    def __init__(self, *args, loss_impl: str = "trl", ce_chunk_tokens: int = DEFAULT_CHUNK_TOKENS, **kwargs):
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl={loss_impl!r}; choose one of {LOSS_IMPLS}")
        model = kwargs.get("model", args[0] if args else None)
        if loss_impl == "chunked":
            if isinstance(model, str):
                raise ValueError("loss_impl='chunked' needs a model instance, not a name")
            if kwargs.get("peft_config") is not None:
                raise ValueError("loss_impl='chunked' does not support PEFT; use loss_impl='trl'")
            train_args = kwargs.get("args")
            if train_args is not None and (train_args.loss_type != "nll" or train_args.label_smoothing_factor):
                # The chunked loss is plain NLL: DFT and label smoothing are TRL's loss path only.
                raise ValueError(f"loss_impl='chunked' computes plain NLL, not loss_type={train_args.loss_type!r} "
                                 f"with label_smoothing_factor={train_args.label_smoothing_factor}; "
                                 "use loss_impl='trl'")
            # Patched before SFTTrainer adds its fused head on top, which passes our keyword through.
            add_chunked_lm_head(model, ce_chunk_tokens)
        self.loss_impl = loss_impl
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_impl == "trl":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        loss = model(**inputs, chunked_ce_labels=labels, num_items_in_batch=num_items_in_batch).loss
        # As SFTTrainer does: num_items_in_batch counts every rank's tokens and DDP averages the gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if return_outputs:  # only evaluation with compute_metrics asks for the logits
            with torch.no_grad():
                return loss, model(**inputs)
        return loss


def run_recipe(model, tokenizer, model_args, training_args, script_args, train_dataset, eval_dataset,
               data_collator=None):
    """The trainer both recipes build (same loss options, same PEFT config), trained and saved."""
    from trl import get_peft_config

    trainer = MultiverseSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=data_collator,
        peft_config=get_peft_config(model_args),
        loss_impl=script_args.loss_impl,
        ce_chunk_tokens=script_args.ce_chunk_tokens,
    )
    return train_and_save(trainer, training_args, script_args)


def train_and_save(trainer, training_args, script_args):
    """Train, save the weights with the log history beside them (to compare recipes)."""
    from ..distributed import check_training_launch

    check_training_launch(training_args)  # launched for N processes: one N-process job, never N lone ones
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return trainer
