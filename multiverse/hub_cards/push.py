"""``multiverse push MODEL REPO_ID``: upload an allow-listed set of files with the card, in one commit.

Only what a Hub model repository needs goes up: weights, config, generation config, tokenizer files, the
remote code, the card, and files the user names (``include``). A folder that holds training state (a
``multiverse train`` output: ``training_args.bin`` carries ``--hub_token`` in plain text, ``optimizer.pt``,
``checkpoint-*``, a ``.env``...) is refused: ``multiverse export`` writes a clean folder from it first.

Whether the Hub is reachable is learned from huggingface_hub itself: its offline mode (``HF_HUB_OFFLINE``) and
the errors of the first call (``create_repo``), which comes before any long export.
"""

import contextlib
import fnmatch
import glob
import json
import re
import shutil
import tempfile
from pathlib import Path

# Top-level files of an exported model; each shell pattern matches a name, not a path.
MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
               "*.py", "README.md")
# What a Trainer leaves beside the weights (and secrets), never to be published.
TRAINING_STATE = ("training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
                  "rng_state*.pth", "trainer_state.json", "checkpoint-*", "global_step*", "pytorch_model_fsdp*",
                  ".env", ".env.*", "*.env")


class HubUnreachable(ConnectionError):
    pass


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def training_state(folder: str | Path) -> list[str]:
    """The names in ``folder`` (top level) that are training state or secrets."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if _matches(p.name, TRAINING_STATE)) if folder.is_dir() else []


def refuse_training_state(folder: str | Path, repo_id: str = "REPO_ID"):
    found = training_state(folder)
    if found:
        raise ValueError(f"{folder} holds training state ({', '.join(found)}), which must not be published; "
                         f"export it first: `multiverse export {folder} OUT --repo-id {repo_id}`, then "
                         f"`multiverse push OUT {repo_id}`")


def upload_files(folder: str | Path, include=()) -> list[str]:
    """The exact files (paths relative to ``folder``) that a push of ``folder`` uploads."""
    folder = Path(folder)
    refuse_training_state(folder)
    files = {p.name for p in folder.iterdir() if p.is_file() and _matches(p.name, MODEL_FILES)}
    for pattern in include or ():
        named = [p.relative_to(folder).as_posix() for p in folder.glob(pattern) if p.is_file()]
        if not named:
            raise ValueError(f"--include {pattern!r} matches no file in {folder}")
        secret = [n for n in named if any(_matches(part, TRAINING_STATE) for part in n.split("/"))]
        if secret:
            raise ValueError(f"--include {pattern!r} names training state or secrets ({', '.join(secret)}); "
                             "these are never uploaded")
        files.update(named)
    if "config.json" not in files or not any(f.endswith(".safetensors") for f in files):
        raise ValueError(f"{folder} has no config.json and *.safetensors weights to push; is it a model folder?")
    return sorted(files)


@contextlib.contextmanager
def hub_errors(repo_id: str):
    """Turn huggingface_hub's offline mode and network failures into ``HubUnreachable``."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled as err:
        raise HubUnreachable(f"offline mode is on (HF_HUB_OFFLINE), so nothing can be pushed to {repo_id}; "
                             "unset it on a machine with network access") from err
    except HTTPError as err:
        if isinstance(err, HfHubHTTPError):  # the Hub answered: a user error (auth, name...), said in its words
            raise
        raise HubUnreachable(f"cannot reach the Hub ({type(err).__name__}: {err})") from err


@contextlib.contextmanager
def staged(model: str | Path, repo_id: str, include=(), verify: bool = True, **card):
    """(folder, files) to upload: ``model`` itself when it is an export, else a temporary export of it."""
    from .export import export_model, is_exported

    folder = Path(str(model))
    if folder.is_dir():
        refuse_training_state(folder, repo_id)
    if is_exported(folder) and not card:
        loads = card_model_id(folder)
        if loads != repo_id:  # the card would tell Hub readers to load something else, e.g. a local path
            raise ValueError(f"{folder}/README.md's usage snippet loads {loads!r}, not {repo_id!r}; export again "
                             f"with --repo-id {repo_id}")
        yield folder, upload_files(folder, include)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        export_model(model, out, repo_id=repo_id, verify=verify, **card)
        for name in _included(folder, include):  # files the user named come along from the source folder
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, out / name)
        yield out, upload_files(out, include)


def card_model_id(folder: Path) -> str | None:
    """The ``model_id`` that the exported card's usage snippet loads."""
    match = re.search(r"^model_id = (.+)$", (folder / "README.md").read_text(encoding="utf-8"), re.M)
    return json.loads(match.group(1)) if match else None


def _included(folder: Path, include) -> list[str]:
    if not include:
        return []
    if not folder.is_dir():
        raise ValueError(f"--include needs a local model folder, not {folder}")
    return [p.relative_to(folder).as_posix() for pattern in include for p in folder.glob(pattern) if p.is_file()]


def push(model: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
         include=(), dry_run: bool = False, commit_message: str = "Upload Multiverse model", verify: bool = True,
         **card) -> str | list[str]:
    """Push ``model`` to ``repo_id``; returns the commit URL, or with ``dry_run`` the files it would upload.

    A folder that already is a complete export (``multiverse export``) is uploaded as it is (its allow-listed
    files); anything else is exported first into a temporary folder with ``card`` as the card's fields. A
    ``save_to_disk`` dataset folder is pushed as a dataset with its README.md card. ``dry_run`` touches no
    network: a Hub id (not a local folder) cannot be planned without downloading it, so it is refused.
    """
    from huggingface_hub import HfApi

    from .cards import check_hub_id

    check_hub_id(repo_id, "repo_id")
    folder = Path(str(model))
    if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
        return push_dataset(folder, repo_id, private=private, token=token, dry_run=dry_run)
    if dry_run:
        if not folder.is_dir():
            raise ValueError(f"--dry-run plans a local folder; {model} is not one")
        with staged(model, repo_id, include, verify=False, **card) as (_, files):
            return files
    api = HfApi(token=token)
    with hub_errors(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)  # the first Hub call: fails fast when offline
    with staged(model, repo_id, include, verify=verify, **card) as (out, files), hub_errors(repo_id):
        # Exact names, escaped, as upload_folder's allow_patterns: what was listed is what goes.
        commit = api.upload_folder(repo_id=repo_id, folder_path=out, commit_message=commit_message,
                                   allow_patterns=[glob.escape(f) for f in files])
    return str(commit)


def push_dataset(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                 dry_run: bool = False) -> str | list[str]:
    """Push a curated dataset folder and its card (``multiverse.curation.card.dataset_card``)."""
    from datasets import DatasetDict, load_from_disk
    from huggingface_hub import HfApi

    from .cards import dataset_card_of

    card = dataset_card_of(folder)
    data = load_from_disk(str(folder))
    if dry_run:  # datasets names the shards at upload time; the plan says what they hold
        splits = data.items() if isinstance(data, DatasetDict) else [("train", data)]
        return ["README.md"] + [f"data/{split}-*.parquet ({d.num_rows} rows)" for split, d in splits]
    api = HfApi(token=token)
    with hub_errors(repo_id):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        # The card goes first: datasets' push_to_hub then merges its dataset_info into the card's metadata
        # instead of replacing the card with a bare one.
        card.push_to_hub(repo_id, repo_type="dataset", token=token)
        info = data.push_to_hub(repo_id, private=private, token=token)
    return str(getattr(info, "commit_url", info))
