"""Model cards: rendered from the packaged template, metadata parsed back with ModelCard.load."""

import ast
import json
import re

import pytest
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard

from multiverse.hub_cards.cards import dataset_card_of, eval_results_of, model_card, training_record
from multiverse.hub_cards.export import usage_snippet
from multiverse.model_shapes import shape_config

from samples import RESULTS


def render(tmp_path, **overrides):
    fields = dict(model_name="mv-tiny", repo_id="someone/mv-tiny", base_model="Qwen/Qwen2.5-1.5B-Instruct",
                  datasets=["someone/mv-sft"], license="apache-2.0", tags=["toy"], config=shape_config("tiny"),
                  num_parameters=1_234_567, eval_results=RESULTS,
                  recipe=dict(command="multiverse train --config cfg.yaml", config="learning_rate: 1.0e-5\n"),
                  training=[("epochs", "3")])
    fields.update(overrides)
    path = tmp_path / "README.md"
    model_card(**fields).save(path)
    return path


def test_card_metadata_parses_back(tmp_path):
    card = ModelCard.load(render(tmp_path))
    data = card.data
    assert data.base_model == ["Qwen/Qwen2.5-1.5B-Instruct"] and data.datasets == ["someone/mv-sft"]
    assert data.license == "apache-2.0" and data.pipeline_tag == "text-generation"
    assert data.library_name == "transformers" and {"multiverse", "custom_code", "toy"} <= set(data.tags)
    assert data.model_name == "mv-tiny"
    got = {(r.metric_type, r.metric_config): r.metric_value for r in data.eval_results}
    assert got == {("accuracy", "parallel@256"): 0.915, ("parallelism", "parallel@256"): 2.498,
                   ("accuracy", "autoregressive@256"): 0.905}
    assert {r.dataset_name for r in data.eval_results} == {"toy-sums"}
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == \
        [(r.metric_type, r.metric_value) for r in eval_results_of(RESULTS, "mv-tiny")]


def test_card_body_has_usage_recipe_evaluation_and_citation(tmp_path):
    text = ModelCard.load(render(tmp_path)).text
    for needle in ('model_id = "someone/mv-tiny"',
                   "AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True",
                   "model.generate(input_ids", "out.multiverse[0]", "## Training recipe",
                   "multiverse train --config cfg.yaml", "learning_rate: 1.0e-5", "| epochs | 3 |",
                   "| parallel | 256 | 91.5% | 200 | 61.2 | 24.5 | 2.50 |",
                   "| autoregressive | 256 | 90.5% | 200 | 60.0 | 60.0 | 1.00 |",
                   "multiverse eval someone/mv-tiny --benchmark data/toy-sums.jsonl --max-new-tokens 256",
                   "eprint        = {2506.09991}", "1.2M parameters", "[Qwen/Qwen2.5-1.5B-Instruct]"):
        assert needle in text, needle
    compile(text.split("```python\n")[1].split("```")[0], "usage", "exec")  # the snippet is valid Python


def test_card_without_evaluation_or_base(tmp_path):
    card = ModelCard.load(render(tmp_path, eval_results=None, base_model=None, datasets=None, recipe=None,
                                 training=None))
    assert card.data.eval_results is None and card.data.base_model is None
    assert "Not evaluated yet" in card.text and "fine-tuned from" not in card.text
    assert "TRL's `SFTTrainer`" in card.text  # the default recipe text


@pytest.mark.parametrize("field, value", [("base_model", "/models/qwen"), ("datasets", ["./data/sft"])])
def test_local_paths_are_rejected_from_metadata(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}=.*not a Hub id"):
        render(tmp_path, **{field: value})


def test_training_record_reads_trainer_state(tmp_path):
    assert training_record(tmp_path) == []
    (tmp_path / "trainer_state.json").write_text(json.dumps({
        "global_step": 120, "epoch": 3.0, "train_batch_size": 8,
        "log_history": [{"loss": 2.5, "step": 10}, {"loss": 0.1234567, "step": 120},
                        {"train_runtime": 512.3, "train_loss": 0.8, "step": 120}]}))
    assert dict(training_record(tmp_path)) == {"optimizer steps": "120", "epochs": "3", "batch size per device": "8",
                                               "final training loss": "0.1235", "training time": "512 s"}


def test_dataset_card_is_read_back_for_push(tmp_path):
    with pytest.raises(FileNotFoundError, match="no README.md dataset card"):
        dataset_card_of(tmp_path)
    card = DatasetCard.from_template(DatasetCardData(license="mit", tags=["multiverse"]),
                                     template_str="---\n{{ card_data }}\n---\n# d\n")
    card.save(tmp_path / "README.md")
    assert dataset_card_of(tmp_path).data.tags == ["multiverse"]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced code block, by CommonMark's rule: a fence closes only with a line of
    at least as many backticks and nothing else."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\S*)\s*$", lines[i])
        if opening is None:
            i += 1
            continue
        fence, body, i = opening.group(1), [], i + 1
        while i < len(lines) and not re.match(rf"^`{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append((opening.group(2), "\n".join(body)))
        i += 1
    return blocks


def test_backticks_in_prompt_command_and_config_stay_inside_their_blocks(tmp_path):
    prompt = "Fix this:\n```\nprint(1)\n```\nand ```` too"
    command = "multiverse train --config cfg.yaml  # ```"
    config = "note: |\n  ```\n  text\n  ```\n"
    path = render(tmp_path, example_prompt=prompt, recipe=dict(command=command, config=config))
    blocks = fenced_blocks(path.read_text())
    python = [body for info, body in blocks if info == "python"]
    assert len(python) == 1
    tree = ast.parse(python[0])  # the whole usage snippet, still valid Python
    messages = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and node.targets[0].id == "messages")
    assert ast.literal_eval(messages)[0]["content"] == prompt
    assert ("bash", command) in blocks and ("yaml", config.strip()) in blocks
    snippet = usage_snippet(tmp_path)  # what export's fresh-process check runs
    assert snippet.rstrip().endswith("parallelism {stats['parallelism']:.2f}\")") and prompt[:9] in snippet
