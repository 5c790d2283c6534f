"""The dataset card of a curated dataset (``huggingface_hub.DatasetCard`` from a packaged template)."""

from importlib import resources

from huggingface_hub import DatasetCard, DatasetCardData


def dataset_card(dataset, report: dict, *, output: str, source: str, backend: str, prompts_fingerprint: str,
                 max_repairs: int, bounds, mix: float | None = None, pretty_name: str = "Multiverse SFT data",
                 license: str | None = None) -> DatasetCard:
    rows = sum(len(split) for split in dataset.values())
    size = next(c for n, c in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                               (float("inf"), "n>1M")) if rows < n)
    data = DatasetCardData(language="en", license=license, pretty_name=pretty_name, size_categories=size,
                           task_categories=["text-generation"], tags=["multiverse", "parallel-reasoning", "sft"])
    train_formats = list(dataset["train"]["format"])
    mix_ar, sequential = train_formats.count("autoregressive"), train_formats.count("sequential")
    what = {"train": ("Multiverse examples" if mix is None else "autoregressive-to-Multiverse curriculum")
            + (f" ({sequential} sequential: nothing in them runs in parallel)" if sequential else ""),
            "autoregressive": "the same examples, structure stripped (baseline)"}
    template = resources.files(__package__).joinpath("templates", "dataset_card.md").read_text(encoding="utf-8")
    return DatasetCard.from_template(
        data, template_str=template, pretty_name=pretty_name, output=output, source=source, backend=backend,
        prompts_fingerprint=prompts_fingerprint, max_repairs=max_repairs, bounds=bounds, report=report, mix=mix,
        mix_ar=mix_ar, mix_mv=len(train_formats) - mix_ar,
        splits=[(name, len(split), what.get(name, "")) for name, split in dataset.items()])
