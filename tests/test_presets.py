"""The prompt presets render the reference's prompts byte for byte with the real Qwen2.5 chat template."""

import pytest

from multiverse.evaluation.prompts import PRESETS, render_prompt, resolve_preset, user_turn
from multiverse.testing import corpus_files, full_corpus_files
from multiverse.transcripts import read_transcript


@pytest.fixture
def qwen(qwen_tokenizer):
    return qwen_tokenizer


@pytest.mark.parametrize("path", corpus_files() + [pytest.param(f, marks=pytest.mark.corpus) for f in full_corpus_files()],
                         ids=lambda p: p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1])
def test_eval_preset_renders_each_corpus_prompt(qwen, path):
    transcript = read_transcript(path)
    assert transcript.question and transcript.prompt.startswith("<|im_start|>system\n")
    assert render_prompt(qwen, transcript.question, PRESETS["multiverse-eval"]) == transcript.prompt


def test_train_preset_uses_the_default_system_message(qwen):
    text = render_prompt(qwen, "What is 2+2?", PRESETS["multiverse-train"])
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+2? Think step by step and in parallel before answering.<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_overrides_and_bad_templates(qwen):
    preset = resolve_preset("multiverse-eval", system="Be brief.", user_template="Q: {question} (in \\{braces\\})")
    assert (preset.temperature, preset.budget) == (0.6, "critical-path")
    assert user_turn(preset, "x^{2}?") == "Q: x^{2}? (in \\{braces\\})"
    assert render_prompt(qwen, "1?", preset).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    with pytest.raises(ValueError, match="no \\{question\\}"):
        resolve_preset("plain", user_template="Solve it.")
    with pytest.raises(ValueError, match="choose from plain, multiverse-eval, multiverse-train"):
        resolve_preset("paper")
