"""Evaluate exported quickstart models on held-out problems, meant to run in a fresh process.

    python -m multiverse.quickstart.evaluation MODEL_DIR TEST.jsonl OUT_DIR [--baseline AR_DIR] [--max-new-tokens N]

The Multiverse model is loaded with ``trust_remote_code=True`` from its exported folder, so its class comes
from the folder's remote code (the output names the module). Grading, both decoding modes and the report
are ``multiverse eval``'s. Prints one JSON line.
"""

import argparse
import json

import torch


def load(folder: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    return model, tokenizer


def replay(model, tokenizer, problem: dict) -> dict:
    """Force the reference completion through the reloaded model: forks, merges, exact reproduction."""
    from ..evaluation.prompts import PRESETS, prompt_ids

    prompt = torch.tensor([prompt_ids(tokenizer, problem["question"], PRESETS["plain"])])
    target = tokenizer.encode(problem["completion"], add_special_tokens=False)
    out = model.generate(prompt, forced_completions=[target], max_new_tokens=len(target) + 8,
                         return_dict_in_generate=True)
    stats = out.multiverse[0]
    return {"exact": out.sequences[0, prompt.shape[1]:].tolist() == target, "forks": stats["forks"],
            "tokens": stats["tokens"], "steps": stats["steps"]}


def example_tree(model, tokenizer, question: str, budget: int) -> dict:
    from ..evaluation.prompts import PRESETS, prompt_ids
    from ..generation.tree_view import branch_tree
    from ..transcripts import completion_text

    ids = torch.tensor([prompt_ids(tokenizer, question, PRESETS["plain"])])
    out = model.generate(ids, max_new_tokens=budget, do_sample=False,
                         tokenizer=tokenizer, return_dict_in_generate=True)
    text = completion_text(tokenizer, out.sequences[0, ids.shape[1]:])  # tags kept, padding and <|im_end|> not
    return {"question": question, "completion": text,
            "tree": branch_tree(out.multiverse[0])}


def evaluate_folders(model_dir: str, test_file: str, out_dir: str, baseline_dir: str | None = None,
                     budget: int = 512, batch_size: int = 100) -> dict:
    from ..evaluation.benchmark import load_benchmark
    from ..evaluation.report import write_report
    from ..evaluation.runner import evaluate
    from ..evaluation.summary import summarize

    problems = load_benchmark(test_file)
    model, tokenizer = load(model_dir)
    records = evaluate(model, tokenizer, problems, [budget], ("parallel", "autoregressive"),
                       batch_size=batch_size, progress=False)
    rows = {r["mode"]: r for r in summarize(records)}
    write_report(records, list(rows.values()), out_dir, benchmark="toy dials (held out)", model=model_dir,
                 settings={"max_new_tokens": budget, "batch_size": batch_size})
    with open(test_file, encoding="utf-8") as f:
        first = json.loads(f.readline())
    par, ar = rows["parallel"], rows["autoregressive"]
    result = {
        "model_class": f"{type(model).__module__}.{type(model).__name__}",
        "problems": par["problems"],
        "accuracy": par["accuracy"],
        "accuracy_autoregressive_decoding": ar["accuracy"],
        "parallelism": par["parallelism"],
        "tokens": round(par["mean_tokens"] * par["problems"]), "steps": round(par["mean_steps"] * par["problems"]),
        "mv_seconds": round(par["seconds"], 2), "ar_seconds": round(ar["seconds"], 2),
        "speedup": round(ar["seconds"] / par["seconds"], 3),
        "example": example_tree(model, tokenizer, first["question"], budget),
        "replay": replay(model, tokenizer, first),
    }
    if baseline_dir:
        base, base_tok = load(baseline_dir)
        (row,) = summarize(evaluate(base, base_tok, problems, [budget], ("autoregressive",),
                                    batch_size=batch_size, progress=False))
        result["baseline"] = {"accuracy": row["accuracy"], "seconds": round(row["seconds"], 2)}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("test_file", help="JSONL with question, answer and the reference completion")
    p.add_argument("out_dir", help="where multiverse eval's report (table, JSON, plot) goes")
    p.add_argument("--baseline", default=None, help="the autoregressive baseline's folder")
    p.add_argument("--max-new-tokens", type=int, default=512)
    args = p.parse_args(argv)
    print(json.dumps(evaluate_folders(args.model_dir, args.test_file, args.out_dir, args.baseline,
                                      args.max_new_tokens)))


if __name__ == "__main__":
    main()
