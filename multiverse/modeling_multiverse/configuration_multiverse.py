"""MultiverseConfig: a Qwen2 config that also knows the ids of the 12 tag tokens."""

from transformers import Qwen2Config

from .structure import POSITION_RULES, REFERENCE

QWEN25_TAG_IDS = list(range(151665, 151677))  # where Multiverse-32B (Qwen2.5 vocabulary) has them


class MultiverseConfig(Qwen2Config):
    r"""
    Args:
        multiverse_tag_ids (`list[int]`, *optional*):
            Ids of the 12 tags in `TAGS` order. Defaults to their ids in the Qwen2.5 vocabulary, so a plain
            Qwen2 checkpoint such as Multiverse4FM/Multiverse-32B loads without conversion.
        multiverse_seed_token_ids (`dict[str, int]`, *optional*):
            Single-token ids of `"\n"`, the digits, `"."` and `":"`, when the tokenizer splits path labels into
            exactly these pieces. It lets `generate` seed `\n<Path>\n1.2:` without a tokenizer.
        multiverse_position_rule (`str`, *optional*, defaults to `"reference"`):
            How position ids are laid out, so a model sees the positions it was trained with. `"reference"` is
            the published checkpoints' rule (every `<Path>` of a block at pos(`</Goal>`) + 1); a config without
            the field gets it, as the plain-qwen2 Multiverse-32B does. `"branch-start"` is the rule of models
            trained with this project before it followed the reference. See `structure.POSITION_RULES`.
    """

    model_type = "multiverse"

    def __init__(self, multiverse_tag_ids=None, multiverse_seed_token_ids=None, multiverse_position_rule=REFERENCE,
                 **kwargs):
        self.multiverse_tag_ids = list(multiverse_tag_ids) if multiverse_tag_ids is not None else list(QWEN25_TAG_IDS)
        if len(self.multiverse_tag_ids) != 12:
            raise ValueError(f"multiverse_tag_ids needs the 12 tag ids in TAGS order, got {self.multiverse_tag_ids}")
        self.multiverse_seed_token_ids = multiverse_seed_token_ids
        if multiverse_position_rule not in POSITION_RULES:
            raise ValueError(f"multiverse_position_rule={multiverse_position_rule!r}: must be one of {POSITION_RULES}")
        self.multiverse_position_rule = multiverse_position_rule
        super().__init__(**kwargs)
