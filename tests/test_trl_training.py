"""The recipes end to end on the CPU: tiny models, sdpa, two steps each."""

import functools
import json
import math

import pytest
import torch
from datasets import Dataset
from huggingface_hub import constants
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM
from trl import SFTConfig
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.model_shapes import SHAPES, random_model
from multiverse.modeling_multiverse import MultiverseModel, tag_token_ids
from multiverse.modeling_multiverse.masks import visibility_from_order
from multiverse.modeling_multiverse.tags import TAGS
from multiverse.trl_recipes import MultiverseDataCollator
from multiverse.trl_recipes import sft_autoregressive, sft_multiverse
from multiverse.trl_recipes.trainer import MultiverseSFTTrainer, _from_pretrained_kwargs
from structures import NL, TAG_IDS, build, reference_mask
from samples import COMPLETION

THREE_PATHS = ("<Think>\nCheck three cases.\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n"
               "</Outline>\n<Outline>\n3: c\n</Outline>\n</Goal>\n<Path>\n1: a holds.\n</Path>\n<Path>\n2: b fails,"
               " since <Parallel>\n<Goal>\n<Outline>\n2.1: x\n</Outline>\n<Outline>\n2.2: y\n</Outline>\n</Goal>\n"
               "<Path>\n2.1: x\n</Path>\n<Path>\n2.2: y\n</Path>\n<Conclusion>\nno\n</Conclusion>\n</Parallel>\n"
               "</Path>\n<Path>\n3: c holds.\n</Path>\n<Conclusion>\nTwo of three.\n</Conclusion>\n</Parallel>\n"
               "</Think>\nAnswer: 2")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("trl")
    random_model("tiny", tokenizer).save_pretrained(root / "multiverse")
    tokenizer.save_pretrained(root / "multiverse")
    fields = {k: v for k, v in SHAPES["tiny"].items()}
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=4096, **fields)).save_pretrained(
        root / "qwen2")
    tokenizer.save_pretrained(root / "qwen2")
    rows = [{"prompt": [{"role": "user", "content": f"Problem {i}?"}],
             "completion": [{"role": "assistant", "content": text}]}
            for i, text in enumerate([COMPLETION, THREE_PATHS])]
    Dataset.from_list(rows).to_json(root / "data.jsonl")
    (root / "tiny.yaml").write_text(
        f"model_name_or_path: {root / 'multiverse'}\nattn_implementation: sdpa\ndataset_name: {root / 'data.jsonl'}\n"
        f"output_dir: {root / 'run'}\nmax_steps: 2\nper_device_train_batch_size: 2\nmax_length: 512\nuse_cpu: true\n"
        "bf16: false\nlearning_rate: 1.0e-3\nreport_to: none\nsave_strategy: 'no'\nlogging_steps: 1\nseed: 0\n"
        "activation_checkpointing: false\n")
    return root


def parse_recipe(module, workdir, *extra):
    return module.make_parser().parse_args_and_config(["--config", str(workdir / "tiny.yaml"), *extra])


def logged_losses(output_dir):
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [row["loss"] for row in history if "loss" in row]


def test_cli_trains_two_steps_and_changes_the_weights(workdir):
    result = CliRunner().invoke(app, ["train", "--config", str(workdir / "tiny.yaml")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    losses = logged_losses(workdir / "run")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    before = load_file(workdir / "multiverse" / "model.safetensors")
    after = load_file(workdir / "run" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.isfinite(t).all() for t in after.values())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), sorted(set(before) - set(changed))
    assert json.loads((workdir / "run" / "config.json").read_text())["model_type"] == "multiverse"


def remap(ids, tokenizer):
    """structures.py ids in the tokenizer's vocabulary: its tags and its newline; text ids stay."""
    table = dict(zip(TAG_IDS, tag_token_ids(tokenizer)))
    table[NL] = tokenizer.convert_tokens_to_ids("Ċ")
    return [table.get(t, t) for t in ids]


@pytest.mark.parametrize("loss_impl", ["chunked", "trl"])
def test_attention_mask_used_in_training_is_the_layout_mask(tokenizer, tmp_path, loss_impl):
    inner = [("text", [30]), ("block", [[("text", [40])], [("text", [41, 42])]], [43])]
    builts = [build([("text", [21, 22]), ("block", [[("text", [33, 34])], inner, [("text", [36])]], [37]),
                     ("text", [39])]),
              build([("text", [23]), ("block", [[("text", [44] * 5)], [("text", [45])]], [46, 47])])]
    examples = [remap(b.ids, tokenizer) for b in builts]
    data = Dataset.from_list([{"input_ids": ids, "labels": [-100] * 3 + ids[3:]} for ids in examples])
    model = random_model("tiny", tokenizer).train()
    seen = []
    model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(("batch", kw)), with_kwargs=True)
    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(lambda m, a, kw: seen.append(("mask", kw["attention_mask"])),
                                                  with_kwargs=True)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, use_cpu=True, bf16=False,
                     report_to=[], save_strategy="no", logging_steps=1, activation_checkpointing=False)
    collator = MultiverseDataCollator(model.config.multiverse_tag_ids, tokenizer.pad_token_id)
    trainer = MultiverseSFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                   data_collator=collator, loss_impl=loss_impl)
    trainer.train()
    assert all(math.isfinite(row["loss"]) for row in trainer.state.log_history if "loss" in row)
    masks = checked = 0
    for kind, value in seen:
        if kind == "batch":
            batch = value
            assert batch["mv_segment_ids"] is not None and batch["mv_visibility"] is not None  # the collator's layout
            rows = [examples.index(ids[:len(ids) - int((mask == 0).sum())].tolist())
                    for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
            assert sorted(rows) == [0, 1]  # both structures in one padded batch
            continue
        masks += 1
        assert value.dtype == torch.bool and value.shape[0] == 2
        for b, which in enumerate(rows):
            n = len(examples[which])
            expected = torch.tensor(reference_mask(builts[which].addresses))
            seg, vis = batch["mv_segment_ids"][b, :n].long(), visibility_from_order(batch["mv_visibility"][b])
            layout = torch.ones(n, n, dtype=torch.bool).tril() & vis[seg[:, None], seg[None, :]]
            assert torch.equal(layout, expected)
            assert torch.equal(value[b, 0, :n, :n], expected)
            assert not value[b, 0, :n, n:].any()  # nothing real looks at padding
            checked += 1
    assert masks == 2 * len(model.model.layers) and checked == 2 * masks


def test_autoregressive_baseline_trains_on_sequential_text(workdir, tokenizer):
    out = workdir / "ar"
    trainer = sft_autoregressive.main(*parse_recipe(sft_autoregressive, workdir, "--model_name_or_path",
                                                    str(workdir / "qwen2"), "--output_dir", str(out)))
    tags = tag_token_ids(tokenizer)
    parallel, think = set(tags[2:]), tags[TAGS.index("<Think>")]
    token_rows = trainer.train_dataset["input_ids"]
    assert all(not parallel & set(ids) and think in ids for ids in token_rows)
    assert all(math.isfinite(x) for x in logged_losses(out)) and len(logged_losses(out)) == 2
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"


def test_curriculum_converts_a_qwen2_checkpoint_and_trains_stages_in_order(workdir, tokenizer, monkeypatch):
    out = workdir / "curriculum"
    parallel = set(tag_token_ids(tokenizer)[2:])
    seen = []
    original = MultiverseModel.forward

    @functools.wraps(original)
    def recording(self, *args, **kwargs):  # the model is built inside main(), so watch the class
        seen.append(kwargs["input_ids"][0].tolist())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MultiverseModel, "forward", recording)
    sft_multiverse.main(*parse_recipe(sft_multiverse, workdir, "--model_name_or_path", str(workdir / "qwen2"),
                                      "--output_dir", str(out), "--curriculum", "0.0:1", "1.0:1",
                                      "--num_train_epochs", "1", "--max_steps", "-1",
                                      "--per_device_train_batch_size", "1"))
    assert [bool(parallel & set(ids)) for ids in seen] == [False, False, True, True]
    assert len(logged_losses(out)) == 4
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "multiverse" and saved["multiverse_tag_ids"] == tag_token_ids(tokenizer)


@pytest.mark.parametrize("module, extra, message", [
    (sft_multiverse, ["--packing", "true"], "packing"),
    (sft_multiverse, ["--curriculum", "0:1", "1:1", "--num_train_epochs", "2"], "num_train_epochs=2.0 with a curr"),
    (sft_multiverse, ["--loss_impl", "chunked", "--ce_chunk_tokens", "0"], "ce_chunk_tokens=0"),
    (sft_autoregressive, ["--curriculum", "0:1"], "curriculum belongs to the Multiverse recipe"),
    (sft_multiverse, ["--ce_chunk_tokens", "512"], "ce_chunk_tokens=512 applies to loss_impl='chunked' only"),
    (sft_multiverse, ["--loss_impl", "chunked", "--loss_type", "dft"], "computes plain NLL, not loss_type='dft'"),
    (sft_multiverse, ["--completion_only_loss", "false"], "completion_only_loss=False"),
    (sft_multiverse, ["--assistant_only_loss", "true"], "assistant_only_loss=True is not supported"),
    (sft_multiverse, ["--push_to_hub", "true"], "training_args.bin .with hub_token. included.*multiverse push"),
    (sft_autoregressive, ["--push_to_hub", "true"], "training_args.bin .with hub_token. included"),
])
def test_recipes_reject_bad_setups(workdir, module, extra, message):
    with pytest.raises(ValueError, match=message):
        module.main(*parse_recipe(module, workdir, *extra))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_flex_attention_on_cpu_is_refused_with_a_hint(workdir):
    with pytest.raises(ValueError, match="use 'sdpa' on the CPU"):
        sft_multiverse.main(*parse_recipe(sft_multiverse, workdir, "--attn_implementation", "flex_attention"))


def test_a_shipped_config_by_name_trains_on_the_cpu_from_any_directory(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--config", "qwen2.5-0.5b-instruct", "--model_name_or_path",
                                      str(workdir / "multiverse"), "--dataset_name", str(workdir / "data.jsonl"),
                                      "--output_dir", str(out), "--max_steps", "1", "--max_length", "512",
                                      "--gradient_accumulation_steps", "1", "--save_strategy", "no"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    fallback = [line for line in result.output.splitlines() if "no CUDA device" in line]
    assert len(fallback) == 1 and "attn_implementation: flex_attention -> sdpa" in fallback[0]
    weights = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())  # fp32 on the CPU, never pure bf16
    assert len(logged_losses(out)) == 1


@pytest.mark.parametrize("extra, message", [
    (["--packing", "true"], "error: the Multiverse recipe does not support packing"),
    (["--model_name_or_path", "./no/such/model"], "error: model_name_or_path: no such folder: ./no/such/model"),
    (["--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct"], "is not a local folder, and the Hub is offline"),
])
def test_train_errors_are_one_line(workdir, monkeypatch, extra, message):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = CliRunner().invoke(app, ["train", "--config", str(workdir / "tiny.yaml"), *extra])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantization_flags_reach_from_pretrained(workdir, flag):
    _, training, model = parse_recipe(sft_multiverse, workdir, flag, "true")
    kwargs = _from_pretrained_kwargs(model, training, "sdpa")
    quantization = kwargs["quantization_config"]
    assert getattr(quantization, flag[2:]) is True and kwargs["attn_implementation"] == "sdpa"
