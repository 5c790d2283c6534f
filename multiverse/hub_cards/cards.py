"""Model cards for exported Multiverse models: ``ModelCard.from_template`` with ``ModelCardData`` metadata.

The metadata (base model, datasets, tags, license, pipeline tag, eval results) is what the Hub indexes;
the body is rendered from the packaged Jinja template ``templates/model_card.md``. Curated datasets get
their card from ``multiverse.curation.card.dataset_card``; ``dataset_card_of`` reads it back for a push.
"""

import json
import re
import shlex
from importlib import resources
from pathlib import Path

from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

DEFAULT_TAGS = ("multiverse", "parallel-reasoning", "parallel-decoding", "custom_code")
DEFAULT_PROMPT = "What is 17 * 24 + 13 * 11? Work out the two products in parallel."
RECIPE_TEXT = (
    "Supervised fine-tuning with TRL's `SFTTrainer` through the multiverse-hf recipe (`multiverse train`): the "
    "loss covers completion tokens only, and a collator lays every example out into segments, segment "
    "visibility and positions, from which the backbone builds the Multiverse attention mask. Paths therefore "
    "never see each other in training either, exactly as in parallel decoding. An autoregressive baseline "
    "(`multiverse train --recipe autoregressive`) trains on the same data with the structure stripped."
)


def _fence(*texts) -> str:
    """A code fence longer than any run of backticks in ``texts``: none of them can close it (CommonMark)."""
    longest = max((len(run) for text in texts if text for run in re.findall(r"`+", str(text))), default=0)
    return "`" * max(3, longest + 1)


def check_hub_id(repo_id: str, name: str = "repo_id", hint: str = "") -> str:
    """``repo_id`` if huggingface_hub's ``validate_repo_id`` accepts it, else a ValueError naming ``name``."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(f"{name}={repo_id!r} is not a Hub id (namespace/name){hint}") from None
    return repo_id


def _hub_ids(value, name: str) -> list[str]:
    ids = [value] if isinstance(value, str) else list(value or [])
    # Card metadata only takes Hub ids: a local path would make a broken link on the Hub.
    return [check_hub_id(repo_id, name, "; leave local paths out of the card metadata") for repo_id in ids]


def training_record(folder: str | Path) -> list[tuple[str, str]]:
    """Facts about the run from the ``trainer_state.json`` that the recipes save next to the weights."""
    path = Path(folder) / "trainer_state.json"
    if not path.is_file():
        return []
    state = json.loads(path.read_text(encoding="utf-8"))
    logs = state.get("log_history", [])
    losses = [e["loss"] for e in logs if "loss" in e]
    runtime = next((e["train_runtime"] for e in reversed(logs) if "train_runtime" in e), None)
    facts = [("optimizer steps", state.get("global_step")), ("epochs", state.get("epoch")),
             ("batch size per device", state.get("train_batch_size")),
             ("final training loss", f"{losses[-1]:.4f}" if losses else None),
             ("training time", f"{runtime:.0f} s" if runtime is not None else None)]
    return [(k, v if isinstance(v, str) else f"{v:g}") for k, v in facts if v is not None]


def eval_results_of(results: dict, model_name: str) -> list[EvalResult]:
    """``EvalResult``s from ``multiverse eval``'s results.json: accuracy per mode and budget, and parallelism."""
    benchmark = results["benchmark"]
    out = []
    for row in results["summary"]:
        where = f"{row['mode']} decoding, max_new_tokens={row['max_new_tokens']}"
        common = dict(task_type="text-generation", task_name="Math reasoning", dataset_type=benchmark,
                      dataset_name=benchmark, metric_config=f"{row['mode']}@{row['max_new_tokens']}")
        out.append(EvalResult(metric_type="accuracy", metric_name=f"accuracy ({where})",
                              metric_value=round(row["accuracy"], 4), **common))
        if row["mode"] == "parallel":
            out.append(EvalResult(metric_type="parallelism", metric_name=f"tokens per decode step ({where})",
                                  metric_value=round(row["parallelism"], 3), **common))
    return out


def _eval_command(results: dict, repo_id: str) -> str:
    settings = results.get("settings", {})
    benchmark_file = settings.get("benchmark_file", results["benchmark"] + ".jsonl")
    parts = ["multiverse", "eval", repo_id, "--benchmark", benchmark_file]
    budgets = sorted({r["max_new_tokens"] for r in results["summary"]})
    parts += ["--max-new-tokens", ",".join(str(b) for b in budgets)]
    modes = list(dict.fromkeys(r["mode"] for r in results["summary"]))
    parts += ["--modes", ",".join(modes)]
    return shlex.join(parts)


def model_card(*, model_name: str, repo_id: str | None = None, base_model: str | list | None = None,
               datasets=None, license: str | None = None, tags=(), language: str | list | None = "en",
               config=None, num_parameters: int | None = None, eval_results: dict | None = None,
               recipe: dict | None = None, training: list | None = None, example_prompt: str = DEFAULT_PROMPT,
               max_new_tokens: int = 1024) -> ModelCard:
    """The card of an exported model.

    ``eval_results`` is the content of ``multiverse eval``'s results.json. ``recipe`` may give ``text``,
    ``command`` and ``config`` (YAML text) of the training run; ``training`` is a list of (fact, value)
    rows such as ``training_record(folder)`` returns.
    """
    base_ids = _hub_ids(base_model, "base_model")
    data = ModelCardData(
        model_name=model_name, base_model=base_ids or None, datasets=_hub_ids(datasets, "datasets") or None,
        license=license, language=language, library_name="transformers", pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *tags])),
        eval_results=eval_results_of(eval_results, model_name) if eval_results else None)
    architecture = "shape unknown"
    if config is not None:
        architecture = (f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
                        f"{config.num_attention_heads} attention heads ({config.num_key_value_heads} KV), "
                        f"vocabulary {config.vocab_size}")
        if num_parameters:
            architecture += f", {num_parameters / 1e6:,.1f}M parameters"
    recipe = dict(recipe or {})
    rows = eval_results["summary"] if eval_results else []
    benchmark_text = ""
    if eval_results:
        n = max(r["problems"] for r in rows)
        benchmark_text = (f"Exact answers graded with [math-verify](https://github.com/huggingface/Math-Verify) "
                          f"on `{eval_results['benchmark']}` ({n} problems), greedy decoding.")
    template = resources.files(__package__).joinpath("templates", "model_card.md").read_text(encoding="utf-8")
    model_id = repo_id or model_name
    eval_command = _eval_command(eval_results, model_id) if eval_results else ""
    recipe_config = (recipe.get("config") or "").strip() or None
    return ModelCard.from_template(
        data, template_str=template, model_name=model_name, repo_id=model_id,
        usage_fence=_fence(example_prompt, model_id), command_fence=_fence(recipe.get("command")),
        config_fence=_fence(recipe_config), eval_fence=_fence(eval_command),
        base_model=base_ids[0] if base_ids else None, datasets=data.datasets or [], architecture=architecture,
        example_prompt=example_prompt, max_new_tokens=max_new_tokens,
        recipe_text=recipe.get("text", RECIPE_TEXT), recipe_command=recipe.get("command"),
        recipe_config=recipe_config, training=training or [],
        eval_rows=rows, eval_benchmark_text=benchmark_text, eval_command=eval_command)


def dataset_card_of(folder: str | Path) -> DatasetCard:
    """The card that ``multiverse curate`` saved as README.md in a dataset folder."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no README.md dataset card; write one with "
                                "multiverse.curation.card.dataset_card(...).save(FOLDER/README.md)")
    return DatasetCard.load(path)
