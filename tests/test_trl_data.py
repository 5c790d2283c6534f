"""Training data: loading, the sequential form of the baseline, and the curriculum's stages."""

import pytest
from datasets import Dataset, DatasetDict

from multiverse.trl_recipes.curriculum import FORM_COLUMN, STAGE_COLUMN, Stage, curriculum_dataset, parse_stages
from multiverse.trl_recipes.data import load_training_dataset, sequential_dataset, to_sequential_text

from samples import COMPLETION


def chat_dataset(n=6):
    return Dataset.from_list([{"prompt": [{"role": "system", "content": "<Parallel> in a system prompt stays"},
                                          {"role": "user", "content": f"question {i}"}],
                               "completion": [{"role": "assistant", "content": COMPLETION.replace("6", str(i))}]}
                              for i in range(n)])


def test_sequential_text_keeps_the_reasoning_without_the_structure():
    # The plan (goal), the path labels and the parallel tags go; the reasoning and <Think> stay, in order.
    assert to_sequential_text(COMPLETION) == ("<Think>\nFirst the setup.\nThe area is 6.\nThe perimeter is 12.\n"
                                              "Both are known.\nSo the ratio is 2.\n</Think>\nAnswer: 2")
    nested = "a\n<Parallel>\n<Goal>\n<Outline>\n1: x\n</Outline>\n</Goal>\n<Path>\n1.2: deep\n</Path>\n</Parallel>\nb"
    assert to_sequential_text(nested) == "a\ndeep\nb"
    plain = "no structure\n\n\nhere: 1: kept"
    assert to_sequential_text(plain) == plain


def test_sequential_dataset_rewrites_assistant_turns_only():
    data = sequential_dataset(chat_dataset())
    for row, original in zip(data, chat_dataset()):
        assert row["prompt"] == original["prompt"]
        assert row["completion"][0]["content"] == to_sequential_text(original["completion"][0]["content"])
    plain = sequential_dataset(Dataset.from_list([{"prompt": "q", "completion": COMPLETION}]))
    assert plain[0]["completion"] == to_sequential_text(COMPLETION)


def test_sequential_column_is_used_when_given():
    data = Dataset.from_list([{"prompt": "q", "completion": COMPLETION, "trace": "the original sequential trace"}])
    assert sequential_dataset(data, "trace")[0]["completion"] == "the original sequential trace"
    with pytest.raises(ValueError, match="sequential_column='missing'"):
        sequential_dataset(data, "missing")


def test_parse_stages():
    assert parse_stages(["0.0:1", "0.5:2", "1"]) == [Stage(0.0, 1), Stage(0.5, 2), Stage(1.0, 1)]
    assert parse_stages("0:1,1:3") == [Stage(0.0, 1), Stage(1.0, 3)]
    for bad, message in [("1.5:1", r"in \[0, 1\]"), ("0.5:0", "at least one epoch"), ("half:1", "FRACTION:EPOCHS"),
                         ([], "no stages")]:
        with pytest.raises(ValueError, match=message):
            parse_stages(bad)


def test_curriculum_lays_out_stages_in_order():
    data = chat_dataset(10)
    stages = parse_stages(["0.0:1", "0.5:2", "1.0:1"])
    mixed = curriculum_dataset(data, stages, seed=3)
    assert len(mixed) == 40
    assert mixed[STAGE_COLUMN] == [0] * 10 + [1] * 20 + [2] * 10
    by_question = {row["prompt"][1]["content"]: row["completion"] for row in data}
    for p in range(4):
        rows = mixed.select(range(10 * p, 10 * p + 10))
        assert sorted(r["prompt"][1]["content"] for r in rows) == sorted(by_question)  # each pass sees every example
        assert sum(rows[FORM_COLUMN]) == [0, 5, 5, 10][p]
        for row in rows:
            original = by_question[row["prompt"][1]["content"]]
            if row[FORM_COLUMN]:
                assert row["completion"] == original
            else:
                assert row["completion"][0]["content"] == to_sequential_text(original[0]["content"])
    orders = [mixed.select(range(10 * p, 10 * p + 10))["prompt"] for p in (1, 2)]
    assert orders[0] != orders[1]  # every pass is shuffled on its own
    assert curriculum_dataset(data, stages, seed=3)["prompt"] == mixed["prompt"]  # and reproducibly


def test_curriculum_refuses_what_it_cannot_lay_out():
    with pytest.raises(ValueError, match="already has a 'multiverse_form' column"):
        curriculum_dataset(chat_dataset().add_column(FORM_COLUMN, [True] * 6), [Stage(1.0)])
    with pytest.raises(ValueError, match="map-style dataset"):
        curriculum_dataset(chat_dataset().to_iterable_dataset(), [Stage(1.0)])


def test_load_training_dataset_from_local_sources(tmp_path):
    data = chat_dataset(3)
    data.to_json(tmp_path / "data.jsonl")
    assert load_training_dataset(str(tmp_path / "data.jsonl"))["prompt"] == data["prompt"]
    data.save_to_disk(tmp_path / "single")
    assert len(load_training_dataset(str(tmp_path / "single"))) == 3
    DatasetDict(train=data, test=data.select([0])).save_to_disk(tmp_path / "splits")
    assert len(load_training_dataset(str(tmp_path / "splits"), split="test")) == 1
    with pytest.raises(ValueError, match="not dataset_train_split='dev'"):
        load_training_dataset(str(tmp_path / "splits"), split="dev")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown data file type"):
        load_training_dataset(str(tmp_path / "data.txt"))
