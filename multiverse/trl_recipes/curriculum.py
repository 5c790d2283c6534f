"""Curriculum: train in stages that move from autoregressive to Multiverse examples.

A stage is written ``"FRACTION:EPOCHS"``: for EPOCHS passes over the data, that fraction of the examples is
in Multiverse form and the rest in sequential form (``data.sequential_example``). For example
``["0.0:1", "0.5:1", "1.0:2"]`` starts as an autoregressive model, mixes, then trains on Multiverse only.

The stages are laid out as one dataset, in order, so training must read it in order
(``train_sampling_strategy="sequential"``) for one epoch; every pass is shuffled here, with its own seed.
A sequential-form example has no structure tags, so the Multiverse collator lays it out as plain causal
text: both forms go through the same model and collator.
"""

from dataclasses import dataclass

import numpy as np

from .data import sequential_example, text_column

FORM_COLUMN, STAGE_COLUMN = "multiverse_form", "curriculum_stage"


@dataclass(frozen=True)
class Stage:
    multiverse_fraction: float
    epochs: int = 1


def parse_stages(spec) -> list[Stage]:
    """Stages from ``["0.0:1", "1.0:2"]`` or ``"0.0:1,1.0:2"``; a stage without ``:EPOCHS`` lasts one epoch."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    stages = []
    for item in items:
        text = str(item).strip()
        fraction, _, epochs = text.partition(":")
        try:
            stage = Stage(float(fraction), int(epochs) if epochs else 1)
        except ValueError:
            raise ValueError(f"curriculum stage {text!r}: write FRACTION:EPOCHS, e.g. '0.5:1'") from None
        if not 0.0 <= stage.multiverse_fraction <= 1.0:
            raise ValueError(f"curriculum stage {text!r}: the Multiverse fraction must be in [0, 1]")
        if stage.epochs < 1:
            raise ValueError(f"curriculum stage {text!r}: a stage lasts at least one epoch")
        stages.append(stage)
    if not stages:
        raise ValueError(f"curriculum={spec!r} has no stages; e.g. ['0.0:1', '0.5:1', '1.0:1']")
    return stages


def curriculum_dataset(dataset, stages: list[Stage], seed: int = 0, sequential_column: str | None = None):
    """All stages, in order, as one dataset with ``multiverse_form`` and ``curriculum_stage`` columns."""
    from datasets import Dataset, concatenate_datasets

    if not isinstance(dataset, Dataset):
        raise ValueError("the curriculum needs a map-style dataset (dataset_streaming=False): stages are laid out "
                         "ahead of training")
    for reserved in (FORM_COLUMN, STAGE_COLUMN):
        if reserved in dataset.column_names:
            raise ValueError(f"the dataset already has a {reserved!r} column, which the curriculum writes")
    column, n = text_column(dataset), len(dataset)
    parts = []
    for k, stage in enumerate(stages):
        n_multiverse = round(stage.multiverse_fraction * n)
        for epoch in range(stage.epochs):
            rng = np.random.default_rng([seed, k, epoch])
            order = rng.permutation(n)
            form = np.zeros(n, dtype=bool)
            form[rng.choice(n, n_multiverse, replace=False)] = True
            flags = form[order].tolist()

            def arrange(example, idx, flags=flags, stage_index=k):
                out = {} if flags[idx] else sequential_example(example, column, sequential_column)
                return {**out, FORM_COLUMN: flags[idx], STAGE_COLUMN: stage_index}

            parts.append(dataset.select(order).map(arrange, with_indices=True,
                                                   desc=f"Curriculum stage {k} pass {epoch}"))
    return concatenate_datasets(parts)
