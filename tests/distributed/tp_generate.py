"""Run under torchrun by tests/test_distributed_generate.py: parallel generate on a tp_plan="auto" model.

argv: MODEL_FOLDER CASES_JSON OUT_DIR. Every rank writes OUT_DIR/rank{R}.json with, per case, the sequence,
the decode steps, the forks and (for replays) the logits of the completion, plus the per-layer KV heads the
engine's cache held, so the test can check each rank against a single-process run.
"""

import copy
import json
import sys

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, DistributedConfig

from multiverse.modeling_multiverse import MultiverseForCausalLM
from multiverse.modeling_multiverse.generation_api import OPTION_DEFAULTS, parallel_generate


def run_case(model, tok, case):
    kwargs = dict(return_dict_in_generate=True, max_new_tokens=case["max_new_tokens"], tokenizer=tok)
    if case["kind"] == "replay":
        kwargs.update(forced_completions=[case["completion"]], output_logits=True)
    else:
        kwargs.update(do_sample=True, temperature=case["temperature"], top_p=0.95, seed=case["seed"])
    ids = torch.tensor([case["prompt"]])
    if case.get("static_decode"):
        # The static step behind cuda_graphs=True, run eagerly on the CPU (its decode_attention reads the local
        # heads); generate() exposes it only as cuda_graphs, so it is reached as the engine's tests reach it.
        gc = copy.deepcopy(model.generation_config)
        options = dict(OPTION_DEFAULTS, static_decode=True, **{k: v for k, v in kwargs.items() if k in OPTION_DEFAULTS})
        gc.update(**{k: v for k, v in kwargs.items() if k not in OPTION_DEFAULTS})
        out = parallel_generate(model, ids, None, gc, options)
    else:
        out = model.generate(ids, **kwargs)
    cache = model._multiverse_static_decode[0] if case.get("static_decode") else None
    logits = out.position_logits[0] if case["kind"] == "replay" else []
    return {"sequence": out.sequences[0, len(case["prompt"]):].tolist(), "steps": out.multiverse[0]["steps"],
            "forks": out.multiverse[0]["forks"],
            "logits": [lg.tolist() if lg is not None else None for lg in logits],
            "static_kv_heads": [k.shape[1] for k in cache.keys] if cache is not None else None}


def main(folder, cases_path, out_dir):
    torch.set_num_threads(1)
    model = MultiverseForCausalLM.from_pretrained(folder, distributed_config=DistributedConfig(tp_plan="auto"),
                                                  attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(folder)
    cases = json.loads(open(cases_path).read())
    rank = dist.get_rank()
    # A different global seed per rank: unseeded draws would differ, so agreement must come from the engine.
    torch.manual_seed(1000 + rank)
    results = [run_case(model, tok, case) for case in cases]
    local_heads = [model.model.layers[i].self_attn.k_proj.weight.to_local().shape[0]
                   // model.model.layers[i].self_attn.head_dim for i in range(len(model.model.layers))]
    local_params = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    cli = run_clis(folder, out_dir)
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"world_size": dist.get_world_size(), "local_kv_heads": local_heads, "local_params": local_params,
                   "results": results, "cli": cli}, f)


def run_clis(folder, out_dir):
    """`multiverse generate` and `multiverse eval` on every rank, as torchrun runs them: what each rank printed."""
    from typer.testing import CliRunner

    from multiverse.cli import app

    bench = f"{out_dir}/bench.jsonl"
    if dist.get_rank() == 0:
        with open(bench, "w") as f:
            f.write(json.dumps({"id": "a", "problem": "What is 2+3?", "answer": "5"}) + "\n")
    dist.barrier()
    runner, printed = CliRunner(), {}
    for name, args in (("generate", ["generate", folder, "--prompt", "Add 2 and 3.", "--max-new-tokens", "12",
                                     "--temperature", "0.8", "--json"]),
                       ("eval", ["eval", folder, "--benchmark", bench, "--max-new-tokens", "8", "--modes", "parallel",
                                 "--out", f"{out_dir}/eval", "--no-progress"])):
        result = runner.invoke(app, args)
        printed[name] = {"exit_code": result.exit_code, "output": result.stdout,
                         "error": repr(result.exception) if result.exception else None}
    return printed


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # without it, gloo's teardown aborts a rank (exit -6)
