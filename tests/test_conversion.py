"""Convert a plain Qwen2 checkpoint, save it with remote code and reload it in a fresh process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.modeling_multiverse import TAGS, MultiverseForCausalLM, tag_token_ids
from multiverse.tokenization import train_tokenizer
from multiverse.transcripts import completion_text, read_transcript
from multiverse.testing import corpus_files

PROBE = "Think.\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n" \
        "<Path>\n1: one\n</Path>\n<Path>\n2: two\n</Path>\n<Conclusion>\nboth\n</Conclusion>\n</Parallel>\nend"

FRESH = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, probe = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
ids = torch.tensor([tok.encode(probe)])
with torch.no_grad():
    logits = model(ids).logits[0]
print(json.dumps({"module": type(model).__module__, "imported_package": "multiverse" in sys.modules,
                  "logits": logits.flatten().tolist()}))
"""


def qwen2_base(tmp_path, with_tags=False):
    texts = [read_transcript(f).completion[:3000] for f in corpus_files()[:6]]
    tok = train_tokenizer(texts, 400, with_tags=with_tags)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    folder = tmp_path / ("qwen2-tags" if with_tags else "qwen2")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


def run_fresh(folder, probe):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run([sys.executable, "-c", FRESH, str(folder), probe], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_convert_save_and_reload_in_fresh_process(tmp_path):
    base, base_model, base_tok = qwen2_base(tmp_path)
    pieces = {t: base_tok.encode(t) for t in TAGS}
    out = tmp_path / "mv"
    result = CliRunner().invoke(app, ["convert", str(base), str(out)])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "modeling_multiverse.py", "configuration_multiverse.py", "layout.py",
                 "structure.py"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "multiverse" and "AutoModelForCausalLM" in config["auto_map"]

    tok = AutoTokenizer.from_pretrained(out)
    model = MultiverseForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = tag_token_ids(tok)
    assert model.config.multiverse_tag_ids == ids
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    # each new row is the mean of the rows of the tag's own text pieces, in both matrices
    for tag, tid in zip(TAGS, ids):
        for new, old in ((model.get_input_embeddings(), base_model.get_input_embeddings()),
                         (model.get_output_embeddings(), base_model.get_output_embeddings())):
            torch.testing.assert_close(new.weight[tid], old.weight[pieces[tag]].mean(0))
    # the tags are special, as the reference adds them: completion_text keeps them, skip_special_tokens drops them
    assert completion_text(tok, tok.encode(PROBE)) == PROBE
    assert "<Parallel>" not in tok.decode(tok.encode(PROBE), skip_special_tokens=True)

    with torch.no_grad():
        here = model(torch.tensor([tok.encode(PROBE)])).logits[0]
    fresh = run_fresh(out, PROBE)
    assert fresh["module"].startswith("transformers_modules"), fresh["module"]
    assert not fresh["imported_package"]
    assert torch.equal(torch.tensor(fresh["logits"]).view_as(here), here)


def test_plain_qwen2_with_tags_loads_into_multiverse(tmp_path):
    folder, qwen, tok = qwen2_base(tmp_path, with_tags=True)
    model = MultiverseForCausalLM.from_pretrained(folder, multiverse_tag_ids=tag_token_ids(tok)).eval()
    for (name, a), b in zip(model.named_parameters(), qwen.parameters()):
        assert torch.equal(a, b), name
    ids = torch.tensor([tok.encode(PROBE)])
    with torch.no_grad():
        structured = model(ids).logits
        causal = qwen(ids).logits
    # Up to the paths the layout is causal; from the first <Path> tag on, positions follow the reference
    # training rule (every <Path> at pos(</Goal>) + 1) and path 2 no longer sees path 1.
    n_before = len(tok.encode(PROBE[:PROBE.index("</Goal>\n") + len("</Goal>\n")]))
    torch.testing.assert_close(structured[:, :n_before], causal[:, :n_before], atol=1e-5, rtol=0)
    path2 = len(tok.encode(PROBE[:PROBE.index("\n<Path>\n2")]))
    assert (structured[:, path2:] - causal[:, path2:]).abs().max() > 1e-4
