"""Load any checkpoint that can generate in parallel: a Multiverse folder, or a Qwen2 one that has the tags."""

import os
from pathlib import Path


def resolve_model_path(name: str | os.PathLike, what: str = "model") -> str:
    """``name`` as ``from_pretrained`` should get it: an existing folder (``~`` expanded), or a Hub id.

    The one place that tells a local folder from a Hub id, so a mistyped path never becomes a Hub lookup
    (seconds of retries, then a long traceback). Raises ``FileNotFoundError`` ("no such folder") without any
    network call for a name that cannot be a Hub id (it starts with ``.``, ``/`` or ``~``, has more than one
    ``/``, a space or a backslash...) and is not a folder; and for a Hub id that has no cached copy while the
    Hub is offline (``HF_HUB_OFFLINE``). ``what`` names the argument in the message (``"--model_name_or_path"``).
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise FileNotFoundError(f"{what} {text!r} is a file, not a model folder")
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise FileNotFoundError(f"{what}: no such folder: {text} (from {os.getcwd()})") from None
    if constants.is_offline_mode() and not isinstance(try_to_load_from_cache(text, "config.json"), str):
        raise FileNotFoundError(f"{what} {text!r} is not a local folder, and the Hub is offline (HF_HUB_OFFLINE) "
                                "with no cached copy; pass a local model folder")
    return text


def load_multiverse(name: str | Path, dtype: str = "auto", device: str = "cpu"):
    """(model, tokenizer) with the installed ``MultiverseForCausalLM``, checked against the tokenizer's tags.

    A plain Qwen2 checkpoint that carries the 12 tags (e.g. Multiverse4FM/Multiverse-32B) is loaded into the
    Multiverse class with its tokenizer's tag ids; one without them needs ``multiverse convert`` first.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from ..conversion import seed_token_ids
    from ..modeling_multiverse import MultiverseForCausalLM, tag_token_ids

    name = resolve_model_path(name)
    config = AutoConfig.from_pretrained(name, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(name)
    try:
        tags = tag_token_ids(tokenizer)
    except ValueError as err:
        raise ValueError(f"{name}: {err}; convert the checkpoint with `multiverse convert {name} OUT`") from None
    if config.model_type not in ("multiverse", "qwen2"):
        raise ValueError(f"{name} is a {config.model_type!r} model; Multiverse needs a Qwen2-family checkpoint")
    extra = {} if config.model_type == "multiverse" else {"multiverse_tag_ids": tags}
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = MultiverseForCausalLM.from_pretrained(name, dtype=torch_dtype, **extra).to(device).eval()
    if list(model.config.multiverse_tag_ids) != tags:
        # A mismatch would lay every sequence out wrongly without any error later on.
        raise ValueError(f"{name}: the tokenizer's tag ids {tags} differ from config.multiverse_tag_ids "
                         f"{model.config.multiverse_tag_ids}")
    if model.config.multiverse_seed_token_ids is None:
        # Lets a reloaded model seed its paths without being handed the tokenizer.
        model.config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return model, tokenizer
