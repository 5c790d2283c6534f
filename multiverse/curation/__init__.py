"""The Multiverse Curator: LLM-assisted conversion of sequential reasoning traces into Multiverse SFT data.

``multiverse curate INPUT OUTPUT --endpoint URL --model NAME`` (or ``--local-model PATH``) runs, per
item: plan (JSON checked against ``schema.Plan``) -> rewrite -> strict validation -> at most K repairs
with the validator's errors -> keep-the-source checks, then builds a ``DatasetDict`` with a card.

Modules, one concern each: ``inputs`` (reading and column mapping), ``prompts`` (packaged Jinja prompts),
``backends`` (OpenAI-compatible HTTP, local transformers), ``redaction`` (no credential printed or
written), ``schema`` (the plan), ``validate`` (strict
validator, canonical format, structure stripping), ``source_checks``, ``independence``, ``pipeline``
(one item's stages), ``checkpoint``, ``runner`` (concurrency, progress, interrupts), ``report``,
``dataset_build``, ``card``, ``toy_task`` (the built-in offline task), ``mock_server`` (a scripted
chat-completions server for tests and offline runs), ``cli``. The protocol (prompts, their variables, the
plan schema, the records) is in this folder's README.md.
"""

import importlib

# Lazy: ``multiverse.cli`` imports this package at every start, and the parser pulls in torch.
_EXPORTS = {
    "build_dataset": "dataset_build", "completion_text": "dataset_build", "CurateConfig": "pipeline",
    "curate_item": "pipeline", "run_curation": "runner", "exact_match": "toy_task", "make_examples": "toy_task",
    "make_test_problems": "toy_task", "Violation": "validate", "canonicalize": "validate",
    "check_blocks": "validate", "strip_structure": "validate", "validate_trace": "validate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
