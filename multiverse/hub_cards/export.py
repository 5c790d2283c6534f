"""``multiverse export MODEL OUT``: a Hub-ready folder, checked by reloading it in a fresh process.

The folder holds the weights (safetensors), config.json with its ``auto_map``, the remote code of
``modeling_multiverse`` (written by ``save_pretrained`` because the classes are registered for the auto
classes), generation_config.json, the tokenizer and README.md, the model card. Parallel decoding is the
model's own ``generate``, so no ``custom_generate/`` folder is needed.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .cards import check_hub_id, model_card, training_record

# Run in a fresh interpreter, from inside the folder, with only what the folder itself provides: the card's
# claim is that torch + transformers + trust_remote_code suffice. So it runs the card's own usage snippet,
# then checks where the classes came from; the installed package must stay unimported.
FRESH_CHECK = r"""
import json, sys
snippet, forced = sys.argv[1], json.loads(sys.argv[2])
scope = {}
exec(snippet, scope)
model, tokenizer, input_ids = scope["model"], scope["tokenizer"], scope["input_ids"]
out = scope["out"]
if forced:
    out = model.generate(input_ids, forced_completions=[tokenizer.encode(forced, add_special_tokens=False)],
                         max_new_tokens=len(tokenizer.encode(forced)) + 8, return_dict_in_generate=True)
stats = out.multiverse[0]
print(json.dumps({"module": type(model).__module__, "imported_package": "multiverse" in sys.modules,
                  "completion": tokenizer.decode(out.sequences[0, input_ids.shape[1]:]),
                  "stats": {k: v for k, v in stats.items() if k != "tree"}}))
"""
# The fence is as long as the card needed (an example prompt may hold backticks); the same length closes it.
SNIPPET = re.compile(r"^(`{3,})python\n(.*?)^\1[ \t]*$", re.S | re.M)


def usage_snippet(folder: str | Path, max_new_tokens: int = 12) -> str:
    """The card's Python usage example, pointed at ``folder`` and with a small token budget."""
    folder = Path(folder).resolve()
    match = SNIPPET.search((folder / "README.md").read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{folder}/README.md has no ```python usage block to check")
    code = re.sub(r'^model_id = .*$', f"model_id = {json.dumps(str(folder))}", match.group(2), count=1, flags=re.M)
    return re.sub(r"max_new_tokens=\d+", f"max_new_tokens={max_new_tokens}", code)


def reload_in_fresh_process(folder: str | Path, forced_completion: str | None = None, timeout: float = 600) -> dict:
    """Run the card's usage snippet on ``folder`` in a new interpreter with ``HF_HUB_OFFLINE=1``.

    ``forced_completion`` is then replayed through the parallel engine of the reloaded model, to show
    forks and merges without a trained model. Returns the module, the completion and the statistics.
    """
    folder = Path(folder).resolve()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as modules:
        # A private modules cache: the check must import this folder's code, not a copy cached earlier.
        env["HF_MODULES_CACHE"] = modules
        proc = subprocess.run([sys.executable, "-c", FRESH_CHECK, usage_snippet(folder),
                               json.dumps(forced_completion or "")],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the exported folder {folder} does not reload in a fresh process:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["module"].startswith("transformers_modules"):
        raise RuntimeError(f"{folder} loaded {result['module']} instead of its own remote code")
    if result["imported_package"]:
        raise RuntimeError(f"{folder}'s remote code imports the installed `multiverse` package; it must be "
                           "self-contained (relative imports only)")
    return result


def export_model(model: str | Path, out: str | Path, *, repo_id: str | None = None, base_model=None, datasets=None,
                 license: str | None = None, tags=(), eval_results: dict | None = None, recipe: dict | None = None,
                 example_prompt: str | None = None, dtype: str = "auto", overwrite: bool = False,
                 verify: bool = True, loaded=None, trust_remote_code: bool = False) -> Path:
    """Write a Hub-ready folder for ``model`` (a folder or Hub id; or pass ``loaded=(model, tokenizer)``).

    ``license`` defaults to the one in the source folder's card, if it has one. ``trust_remote_code`` lets a
    source folder with an ``auto_map`` load through its own code (off: the installed classes load it).
    """
    out = Path(out)
    if repo_id is not None:
        check_hub_id(repo_id, "repo_id")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new folder or pass overwrite=True (--overwrite)")
    if loaded is None:
        from .loading import load_multiverse

        lm, tokenizer = load_multiverse(model, dtype=dtype, trust_remote_code=trust_remote_code)
    else:
        lm, tokenizer = loaded
    source = Path(str(model))
    if license is None and (source / "README.md").is_file():
        from huggingface_hub import ModelCard

        license = ModelCard.load(source / "README.md").data.license
    # The card first: a bad card field must fail before any weights are written.
    name = repo_id.split("/")[-1] if repo_id else out.resolve().name
    # Without a Hub id the snippet loads the folder by its absolute path: a basename would load from neither
    # the Hub nor (outside the parent folder) the disk.
    card = model_card(model_name=name, repo_id=repo_id or str(out.resolve()), base_model=base_model, datasets=datasets,
                      license=license, tags=tags, config=lm.config, num_parameters=lm.num_parameters(),
                      eval_results=eval_results, recipe=recipe,
                      training=training_record(source) if source.is_dir() else [],
                      **({"example_prompt": example_prompt} if example_prompt else {}))
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    missing = [f for f in ("config.json", "generation_config.json", "modeling_multiverse.py",
                           "configuration_multiverse.py") if not (out / f).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained did not write {missing} into {out}; is the model a "
                           "MultiverseForCausalLM registered for the auto classes?")
    card.save(out / "README.md")
    if verify:
        reload_in_fresh_process(out)
    return out


def is_exported(folder: str | Path) -> bool:
    """Whether ``folder`` already is a complete export (card, remote code, auto_map), ready to upload as is."""
    folder = Path(folder)
    config = folder / "config.json"
    if not (folder.is_dir() and config.is_file() and (folder / "README.md").is_file()
            and (folder / "modeling_multiverse.py").is_file()):
        return False
    return "AutoModelForCausalLM" in json.loads(config.read_text(encoding="utf-8")).get("auto_map", {})
