"""Parallel generate on a model sharded by transformers' tensor parallelism (tp_plan="auto", torch DTensor) over
2 gloo ranks, against the same model in one process; and the layer -> device table of a device_map model."""

import json

import pytest
import torch

from distributed_helpers import rank_outputs, torchrun
from multiverse.memory import weight_bytes_per_rank
from multiverse.model_shapes import random_model
from multiverse.modeling_multiverse import MultiverseForCausalLM
from multiverse.modeling_multiverse.parser import parse
from multiverse.testing import corpus_file
from multiverse.transcripts import read_transcript

FOUR_HEADS = dict(num_attention_heads=4, num_key_value_heads=2, hidden_size=128)  # heads divide by 2 ranks


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tp") / "model"
    random_model("tiny", tokenizer, **FOUR_HEADS).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def corpus_case(tokenizer, model):
    """entry_1 up to the first closed top-level block past 300 tokens: forks, paths and a merge, in ~0.5K tokens."""
    t = read_transcript(corpus_file("entry_1"))
    ids = tokenizer.encode(t.completion)
    close = model.config.multiverse_tag_ids[3]  # </Parallel>
    cut = next(i for i, tok in enumerate(ids) if tok == close and i >= 300) + 1
    return tokenizer.encode(t.prompt), ids[:cut]


def single_process(model, tokenizer, case, static=False):
    kwargs = dict(return_dict_in_generate=True, max_new_tokens=case["max_new_tokens"], tokenizer=tokenizer)
    if case["kind"] == "replay":
        kwargs.update(forced_completions=[case["completion"]], output_logits=True)
    else:
        kwargs.update(do_sample=True, temperature=case["temperature"], top_p=0.95, seed=case["seed"])
    out = model.generate(torch.tensor([case["prompt"]]), **kwargs)
    return out.sequences[0, len(case["prompt"]):].tolist(), out.multiverse[0], out.position_logits


def test_tensor_parallel_generate_equals_one_process(folder, tokenizer, tmp_path):
    model = MultiverseForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    prompt, completion = corpus_case(tokenizer, model)
    replay = dict(kind="replay", prompt=prompt, completion=completion, max_new_tokens=len(completion) + 8)
    sample = dict(kind="sample", prompt=prompt, temperature=0.9, seed=7, max_new_tokens=32)
    # The static step (behind cuda_graphs=True) on a shorter cut, inside the block: it only has to equal the eager one.
    static_replay = dict(replay, completion=completion[:200], max_new_tokens=208, static_decode=True)
    # Unseeded: each rank's global generator differs (the script seeds it by rank); rank 0's draws must win.
    unseeded = dict(sample, seed=None, max_new_tokens=16)
    cases = [replay, static_replay, sample, unseeded]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    torchrun("tp_generate.py", folder, tmp_path / "cases.json", tmp_path)
    ranks = rank_outputs(tmp_path)

    ref_seq, ref_stats, ref_logits = single_process(model, tokenizer, replay)
    assert ref_seq == completion
    critical = parse(completion, model.config.multiverse_tag_ids).critical_path
    assert ref_stats["steps"] == critical < len(completion) and ref_stats["forks"] >= 1
    sampled, sampled_stats, _ = single_process(model, tokenizer, sample)
    cut_ref = (static_replay, *single_process(model, tokenizer, static_replay)[1:])
    for rank in ranks:
        assert rank["world_size"] == 2
        assert rank["local_kv_heads"] == [1, 1]  # each rank really holds half of the 2 K/V heads
        assert rank["local_params"] * 4 == weight_bytes_per_rank(model.config, 2, "float32")  # memory.py's figure
        eager, static, sampling, _ = rank["results"]
        for got, (want, stats, logits) in ((eager, (replay, ref_stats, ref_logits)), (static, cut_ref)):
            assert got["sequence"] == want["completion"]  # the eager step, then the static step
            assert got["steps"] == stats["steps"] and got["forks"] == stats["forks"]
            assert [a is None for a in got["logits"]] == [b is None for b in logits[0]]
            recorded = [(torch.tensor(a), b) for a, b in zip(got["logits"], logits[0]) if b is not None]
            assert len(recorded) >= len(want["completion"]) - 2  # a cut path's last token is never fed back
            for a, b in recorded:  # sharded matmuls and an all-reduce: the same logits up to summation order
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        assert static["static_kv_heads"] == [1, 1]
        assert sampling["sequence"] == sampled and sampling["steps"] == sampled_stats["steps"]
    assert ranks[0]["results"] == ranks[1]["results"]  # every rank emitted exactly the same
    # The CLIs under torchrun: both ranks decode, rank 0 alone prints and writes the evaluation's files.
    for name in ("generate", "eval"):
        assert [r["cli"][name]["exit_code"] for r in ranks] == [0, 0], [r["cli"][name] for r in ranks]
        assert ranks[1]["cli"][name]["output"] == ""
    stats = json.loads(ranks[0]["cli"]["generate"]["output"].strip().splitlines()[-1])
    assert stats["tokens"] == 12
    assert json.loads(ranks[0]["cli"]["eval"]["output"].strip().splitlines()[-1])["summary"][0]["problems"] == 1
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "accuracy_vs_budget.png", "records.jsonl", "results.json", "results.md", "settings.json"]
    assert len((tmp_path / "eval" / "records.jsonl").read_text().splitlines()) == 1  # one rank appended


def _cache_devices(model, prompt, completion):
    """Generate a forced replay; return the output and the layer -> device table of the engine's cache."""
    from multiverse.modeling_multiverse.engine import ParallelEngine

    seen, start = [], ParallelEngine._start

    def spy(self, *args):
        out = start(self, *args)
        seen.append(list(self.cache.layer_devices))
        return out

    ParallelEngine._start = spy
    try:
        out = model.generate(torch.tensor([prompt], device=model.device), forced_completions=[completion],
                             return_dict_in_generate=True, max_new_tokens=len(completion) + 8)
    finally:
        ParallelEngine._start = start
    return out, seen[0]


def _device_map_case(folder, tokenizer, device_map):
    from accelerate import dispatch_model

    plain = MultiverseForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    prompt, completion = corpus_case(tokenizer, plain)
    reference, _ = _cache_devices(plain, prompt, completion)
    mapped = MultiverseForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    # accelerate's placement: a hook on every mapped module moves its inputs to its device (forced even when
    # every device is the CPU, so the hooks the engine reads are there).
    mapped = dispatch_model(mapped, device_map=device_map, force_hooks=True)
    assert all(hasattr(layer, "_hf_hook") for layer in mapped.model.layers)
    out, table = _cache_devices(mapped, prompt, completion)
    assert table == [torch.device(device_map[f"model.layers.{i}"]) for i in range(len(mapped.model.layers))]
    assert out.sequences[0, len(prompt):].tolist() == completion
    assert out.multiverse[0]["steps"] == reference.multiverse[0]["steps"]


def test_device_map_puts_each_layer_cache_on_its_layer_device(folder, tokenizer):
    """Every layer named in the device map gets its cache there, read through the engine's layer -> device table."""
    _device_map_case(folder, tokenizer, {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                                         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})


def test_layer_table_reads_accelerate_hooks(folder):
    """An offloaded layer's weights say nothing about where it runs: its hook's execution device does."""
    from accelerate import dispatch_model

    from multiverse.modeling_multiverse.placement import kv_layers

    model = MultiverseForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    model = dispatch_model(model, device_map={"": "cpu"}, force_hooks=True)
    hooked = model.model.layers[1]
    hooked._hf_hook = type("Hook", (), {"execution_device": torch.device("meta")})()
    assert kv_layers(model, "cpu") == [(2, 32, torch.device("cpu")), (2, 32, torch.device("meta"))]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device beside the CPU")
def test_device_map_over_cuda_and_cpu(folder, tokenizer):
    """Two real devices: layer 0 on the GPU, layer 1 and the head on the CPU."""
    _device_map_case(folder, tokenizer, {"model.embed_tokens": "cuda:0", "model.layers.0": "cuda:0",
                                         "model.layers.1": "cpu", "model.norm": "cpu", "model.rotary_emb": "cuda:0",
                                         "lm_head": "cpu"})


def test_per_device_inputs_copy_the_mask_once_per_device_and_step():
    """device_map: layers on a second device get one copy of the step's mask and rotary tables, not one per layer.
    ``meta`` stands in for the second device (a CPU machine has one real device)."""
    from multiverse.modeling_multiverse.placement import PerDeviceInputs

    class Layer(torch.nn.Module):
        def forward(self, hidden, attention_mask=None, position_embeddings=None):
            seen.append((attention_mask, position_embeddings))
            return hidden

    seen = []
    layers = [Layer() for _ in range(5)]
    devices = ["cpu", "cpu", "meta", "meta", "meta"]
    mask, rope = torch.ones(1, 1, 2, 4, dtype=torch.bool), (torch.zeros(1, 2, 8), torch.ones(1, 2, 8))
    for _ in range(2):  # two steps
        seen.clear()
        with PerDeviceInputs(layers, devices):
            for layer in layers:
                layer(torch.zeros(1), attention_mask=mask, position_embeddings=rope)
        assert seen[0][0] is mask and seen[1][0] is mask  # already on its device: untouched
        assert all(m.device.type == "meta" for m, _ in seen[2:])
        assert seen[2][0] is seen[3][0] is seen[4][0]  # one copy for the three layers on that device
        assert seen[2][1][0] is seen[4][1][0] and seen[2][1][1] is seen[3][1][1]
    assert all(not layer._forward_pre_hooks for layer in layers)  # the hooks live for one step
    first = seen[2][0]
    with PerDeviceInputs(layers, devices):
        layers[2](torch.zeros(1), attention_mask=mask)
    assert seen[-1][0] is not first  # a new step makes new copies (the mask changes every step)
