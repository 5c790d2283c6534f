"""Load any checkpoint that can generate in parallel: a Multiverse folder, or a Qwen2 one that has the tags.

One loader serves every command (``generate``, ``eval``, ``export``): remote code runs only when the user
passes ``trust_remote_code=True``. Folders the project writes (``model_type: multiverse``) and plain Qwen2
checkpoints load through the installed package's classes, whatever ``auto_map`` their config names, so a
poisoned folder runs nothing unless asked, and nothing ever prompts "run custom code? [y/N]".
"""

import os
from pathlib import Path

INSTALLED = ("multiverse", "qwen2")  # model types the installed classes load without remote code


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


def _config(name: str, tags: list[int], trust_remote_code: bool):
    """The config to load ``name`` with, or None to hand the folder to its own remote code."""
    from transformers import PretrainedConfig

    from ..modeling_multiverse import MultiverseConfig

    raw, _ = PretrainedConfig.get_config_dict(name)  # reads config.json; imports nothing
    model_type = raw.get("model_type")
    if trust_remote_code and raw.get("auto_map"):
        return None
    if model_type not in INSTALLED:
        if raw.get("auto_map"):
            raise ValueError(f"{name} is a {model_type!r} model whose class is remote code in the folder "
                             f"(auto_map {sorted(raw['auto_map'])}); read it, then pass --trust-remote-code to run it")
        raise ValueError(f"{name} is a {model_type!r} model; Multiverse needs a Qwen2-family checkpoint")
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    if model_type == "qwen2":  # e.g. Multiverse4FM/Multiverse-32B: the tags' ids come from its tokenizer
        fields["multiverse_tag_ids"] = tags
    return MultiverseConfig(**fields)


def load_multiverse(name: str | Path, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False):
    """(model, tokenizer) ready for parallel ``generate``, checked against the tokenizer's tags.

    A plain Qwen2 checkpoint that carries the 12 tags (e.g. Multiverse4FM/Multiverse-32B) is loaded into the
    installed ``MultiverseForCausalLM`` with its tokenizer's tag ids; one without them needs ``multiverse
    convert`` first. ``trust_remote_code=True`` loads a folder with an ``auto_map`` through its own code.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..conversion import seed_token_ids
    from ..modeling_multiverse import MultiverseForCausalLM, tag_token_ids

    name = resolve_model_path(name)
    # Explicit True/False: left at None, transformers asks on the terminal whenever a folder has remote code.
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=bool(trust_remote_code))
    try:
        tags = tag_token_ids(tokenizer)
    except ValueError as err:
        raise ValueError(f"{name}: {err}; convert the checkpoint with `multiverse convert {name} OUT`") from None
    config = _config(name, tags, bool(trust_remote_code))
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    from ..distributed import generation_load_kwargs

    placement = generation_load_kwargs(device)  # under torchrun: tensor-parallel over the launched ranks
    if config is None:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, trust_remote_code=True, **placement)
        if not hasattr(model.config, "multiverse_tag_ids"):
            raise ValueError(f"{name}: its remote code gave a {type(model).__name__}, not a Multiverse model")
    else:
        model = MultiverseForCausalLM.from_pretrained(name, config=config, dtype=torch_dtype, **placement)
    model = (model if placement else model.to(device)).eval()  # a sharded model stays where TP put it
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
