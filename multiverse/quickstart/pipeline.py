"""The quickstart pipeline: toy data -> tokenizer -> Multiverse model and AR baseline -> export -> evaluation.

Everything runs offline on a CPU. The evaluation reloads the exported folder in a fresh Python process
with ``trust_remote_code=True``, as a user of the Hub model would, and decodes the held-out problems in
parallel with the KV-cached engine, then autoregressively with the same model for the speed comparison.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..curation.dataset_build import completion_text
from ..curation.toy_task import make_examples, make_test_problems


@dataclass
class QuickstartSettings:
    train_examples: int = 4000
    test_problems: int = 200
    # 4 dials turning 17 steps: the engine decodes ~2.1 tokens per step
    chain_steps: int = 17
    min_paths: int = 4
    max_paths: int = 4
    # ~4 minutes per model on 2 CPU cores. Probes (toy_task's docstring): 800 steps of 16 found 96% of path
    # starts, 1000 of 12 only 83%, 600 of 24 73%; lr 2e-2 diverged.
    train_steps: int = 900
    batch_size: int = 16
    learning_rate: float = 1e-2
    max_new_tokens: int = 256  # a reference completion is ~140 tokens
    seed: int = 0

    @classmethod
    def smoke(cls) -> "QuickstartSettings":
        """A minute-long run for CI: the same pipeline, too little training to be accurate."""
        return cls(train_examples=200, test_problems=8, chain_steps=5, train_steps=4, batch_size=8,
                   max_new_tokens=128)  # a reference completion is ~90 tokens; an untrained model rambles


def run(out_dir: str, settings: QuickstartSettings, log=print) -> dict:
    from ..evaluation.report import read_results
    from ..hub_cards.export import export_model
    from .training import fresh_model, toy_datasets, toy_tokenizer, train

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = dict(steps=settings.chain_steps, min_paths=settings.min_paths, max_paths=settings.max_paths)
    log(f"[1/5] toy task: {settings.train_examples} training problems, {settings.test_problems} held out")
    examples = make_examples(settings.train_examples, settings.seed, **task)
    tests = make_test_problems(settings.test_problems, settings.seed, **task)
    test_file = out / "test.jsonl"
    test_file.write_text("".join(json.dumps({"id": f"test-{i}", "question": t["question"], "answer": t["answer"],
                                             "completion": completion_text(t["multiverse_trace"], t["answer"])})
                                 + "\n" for i, t in enumerate(tests)), encoding="utf-8")
    data = toy_datasets(examples)
    data.save_to_disk(str(out / "data"))

    log("[2/5] tokenizer: byte-level BPE trained here, with the 12 tags")
    tokenizer = toy_tokenizer(examples[:1000])

    runs = {}
    for name, split in (("multiverse", "train"), ("autoregressive", "autoregressive")):
        log(f"[3/5] training the {name} model from scratch ({settings.train_steps} steps)")
        model = fresh_model(tokenizer, settings.seed)
        runs[name] = train(model, tokenizer, data[split], str(out / f"{name}-trainer"), settings.train_steps,
                           settings.batch_size, settings.learning_rate, settings.seed, log=log)
        runs[name]["model"] = model

    log("[4/5] export: weights, tokenizer, remote code and model card")
    folders = {name: str(out / f"{name}-model") for name in runs}
    models = {name: info.pop("model") for name, info in runs.items()}
    for name in runs:
        export_model(name, folders[name], loaded=(models[name], tokenizer), recipe=_recipe(name, settings, runs),
                     tags=["toy-task"], verify=False)

    log("[5/5] evaluation in a fresh process (trust_remote_code=True)")
    eval_dir = out / "eval"
    result = _evaluate_fresh(folders["multiverse"], str(test_file), str(eval_dir), folders["autoregressive"],
                             settings.max_new_tokens)
    # The card now carries the evaluation table.
    export_model("multiverse", folders["multiverse"], loaded=(models["multiverse"], tokenizer),
                 recipe=_recipe("multiverse", settings, runs), tags=["toy-task"], verify=False, overwrite=True,
                 eval_results=read_results(eval_dir))
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["training"] = runs
    result["settings"] = asdict(settings)
    result["folders"] = folders
    (out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _recipe(name: str, settings: QuickstartSettings, runs: dict) -> dict:
    info = runs[name]
    data = "the Multiverse traces" if name == "multiverse" else "the same traces with the structure stripped"
    return {"text": f"Trained from scratch by `multiverse quickstart` on {data} of the built-in toy task "
                    f"(dials): {info['steps']} optimizer steps of {settings.batch_size} examples, "
                    f"learning rate {settings.learning_rate}, cosine schedule, CPU with sdpa; final loss "
                    f"{info['final_loss']}.",
            "command": "multiverse quickstart"}


def _evaluate_fresh(model_dir: str, test_file: str, eval_dir: str, baseline_dir: str, max_new_tokens: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "multiverse.quickstart.evaluation", model_dir, test_file, eval_dir,
           "--baseline", baseline_dir, "--max-new-tokens", str(max_new_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
