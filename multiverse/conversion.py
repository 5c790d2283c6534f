"""Turn a Qwen2-family checkpoint into a Multiverse one: tags added, embeddings initialized, config.

On a checkpoint that already has the 12 tags (Multiverse4FM/Multiverse-32B) ``convert`` changes nothing but
the config: the same weights and tokenizer, with ``model_type: multiverse``, the tag ids and the remote
code, so the folder also loads with ``trust_remote_code=True`` where the package is not installed.
"""

from pathlib import Path

import torch
from tokenizers import AddedToken

from .modeling_multiverse.configuration_multiverse import MultiverseConfig
from .modeling_multiverse.tags import PATH_SEED, TAGS, tag_token_ids

SEED_CHARS = "\n0123456789.:"


def add_multiverse_tokens(tokenizer, model=None, pad_to_multiple_of: int = 64) -> list[int]:
    """Add the 12 tags to ``tokenizer`` (and resize ``model``); returns their ids in ``TAGS`` order.

    Each new embedding row, and the untied LM-head row, starts as the mean of the rows of the tokens
    the tag's own text had before it became one token. The tags are special tokens, as the reference
    training code adds them (so a tokenizer of ours and the published one behave alike): decode with
    ``multiverse.transcripts.completion_text`` or ``skip_special_tokens=False``, never ``True``, to keep them.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in TAGS if t not in vocab]
    pieces = {t: tokenizer.encode(t, add_special_tokens=False) for t in missing}
    if missing:
        # The reference: tokenizer.add_special_tokens({"additional_special_tokens": [...12 tags...]}).
        tokenizer.add_special_tokens(
            {"extra_special_tokens": [AddedToken(t, normalized=False, special=True) for t in missing]},
            replace_extra_special_tokens=False)  # v4 called them additional_special_tokens
    ids = tag_token_ids(tokenizer)
    if model is not None:
        old_rows = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old_rows:
            # mean_resizing=False: the tag rows are set below; padding rows are never produced.
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
        _init_rows(model, {ids[TAGS.index(t)]: p for t, p in pieces.items()})
        model.config.multiverse_tag_ids = ids
        model.config.multiverse_seed_token_ids = seed_token_ids(tokenizer)
    return ids


@torch.no_grad()
def _init_rows(model, pieces: dict):
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        for new_id, piece_ids in pieces.items():
            if piece_ids:
                weight[new_id] = weight[piece_ids].float().mean(0).to(weight.dtype)


def seed_token_ids(tokenizer) -> dict | None:
    """Single-token ids of the characters in path seeds, if seeds tokenize char by char; else None."""
    table = {}
    for ch in SEED_CHARS:
        ids = tokenizer.encode(ch, add_special_tokens=False)
        if len(ids) != 1:
            return None
        table[ch] = ids[0]
    path = tag_token_ids(tokenizer)[TAGS.index("<Path>")]
    probe = PATH_SEED.format(label="12.3")
    expected = [table["\n"], path] + [table[c] for c in "\n12.3:"]
    return table if tokenizer.encode(probe, add_special_tokens=False) == expected else None


def convert(base: str, out: str, dtype: str = "auto") -> Path:
    """Convert a Qwen2-family checkpoint (a folder, or a Hub id when the Hub is reachable) into ``out``.

    The base's config is read as data and its weights load into the installed class: a base carrying an
    ``auto_map`` runs none of its code.
    """
    import transformers
    from transformers import AutoTokenizer, PretrainedConfig

    from .modeling_multiverse import MultiverseForCausalLM

    raw, _ = PretrainedConfig.get_config_dict(base)
    if raw.get("model_type") not in ("qwen2", "multiverse"):
        raise ValueError(f"{base} is a {raw.get('model_type')!r} model; convert takes Qwen2-family checkpoints")
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    fields["transformers_version"] = transformers.__version__
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    config = MultiverseConfig(**fields)
    model = MultiverseForCausalLM.from_pretrained(base, config=config, dtype=dtype)
    add_multiverse_tokens(tokenizer, model)
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
