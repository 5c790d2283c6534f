"""``multiverse push MODEL REPO_ID``: upload a Hub-ready folder with its card, in one commit.

Before anything is loaded or exported, the Hub endpoint is checked with one DNS lookup and one TCP
connect (a few seconds at most), so an offline machine gets a clear error at once instead of minutes of
HTTP retries after a long export.
"""

import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VALUES = ("1", "true", "yes", "on")


class HubUnreachable(RuntimeError):
    pass


def _resolve(host: str, port: int, timeout: float):
    # getaddrinfo has no timeout of its own; a resolver that hangs must not hang the push.
    result: dict = {}

    def lookup():
        try:
            result["addr"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            result["error"] = err

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise HubUnreachable(f"looking up {host} took more than {timeout:g} s")
    if "error" in result:
        raise HubUnreachable(f"cannot resolve {host} ({result['error']})")
    return result["addr"]


def check_hub(endpoint: str | None = None, timeout: float = 3.0) -> str:
    """Return the endpoint if it accepts connections; raise ``HubUnreachable`` saying why not."""
    from huggingface_hub import constants

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in OFFLINE_VALUES:
            raise HubUnreachable(f"{var}={os.environ[var]} is set, so nothing can be pushed to {endpoint}; "
                                 f"unset it on a machine with network access")
    url = urlparse(endpoint)
    if not url.hostname:
        raise HubUnreachable(f"HF_ENDPOINT={endpoint!r} is not a URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    last = None
    for family, kind, proto, _, address in _resolve(url.hostname, port, timeout):
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return endpoint
        except OSError as err:
            last = err
    raise HubUnreachable(f"cannot connect to {url.hostname}:{port} ({last})")


def push(model: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
         commit_message: str = "Upload Multiverse model", verify: bool = True, **card) -> str:
    """Push ``model`` to ``repo_id``; returns the commit URL.

    A folder that already is a complete export (``multiverse export``) is uploaded as it is; anything else
    is exported first into a temporary folder (weights, tokenizer, remote code, card) with ``card`` as
    the card's fields. A ``save_to_disk`` dataset folder is pushed as a dataset with its README.md card.
    """
    endpoint = check_hub()
    from huggingface_hub import HfApi

    from .export import export_model, is_exported

    folder = Path(str(model))
    if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
        return push_dataset(folder, repo_id, private=private, token=token, endpoint=endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if is_exported(folder) and not card:
        return str(api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message))
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, Path(tmp) / "export", repo_id=repo_id, verify=verify, **card)
        return str(api.upload_folder(repo_id=repo_id, folder_path=Path(tmp) / "export", commit_message=commit_message))


def push_dataset(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                 endpoint: str | None = None) -> str:
    """Push a curated dataset folder and its card (``multiverse.curation.card.dataset_card``)."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    from .cards import dataset_card_of

    endpoint = endpoint or check_hub()
    card = dataset_card_of(folder)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # The card goes first: datasets' push_to_hub then merges its dataset_info into the card's metadata
    # instead of replacing the card with a bare one.
    card.push_to_hub(repo_id, repo_type="dataset", token=token)
    info = load_from_disk(str(folder)).push_to_hub(repo_id, private=private, token=token)
    return str(getattr(info, "commit_url", info))
