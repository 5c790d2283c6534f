"""MultiverseConfig: a Qwen2 config that also knows the ids of the 12 tag tokens."""

from transformers import Qwen2Config

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
    """

    model_type = "multiverse"

    def __init__(self, multiverse_tag_ids=None, multiverse_seed_token_ids=None, **kwargs):
        self.multiverse_tag_ids = list(multiverse_tag_ids) if multiverse_tag_ids is not None else list(QWEN25_TAG_IDS)
        if len(self.multiverse_tag_ids) != 12:
            raise ValueError(f"multiverse_tag_ids needs the 12 tag ids in TAGS order, got {self.multiverse_tag_ids}")
        self.multiverse_seed_token_ids = multiverse_seed_token_ids
        super().__init__(**kwargs)
