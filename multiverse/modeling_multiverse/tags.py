"""The 12 Multiverse tag tokens, in the order the published checkpoints added them.

On Qwen2.5 they get ids 151665..151676. Code elsewhere refers to a tag by its *code*, the index
into ``TAGS``, so that text (matched by regex) and token ids (matched by id) share one grammar.
"""

import re

TAGS = (
    "<Think>", "</Think>",
    "<Parallel>", "</Parallel>",
    "<Goal>", "</Goal>",
    "<Outline>", "</Outline>",
    "<Path>", "</Path>",
    "<Conclusion>", "</Conclusion>",
)
(THINK, END_THINK, PARALLEL, END_PARALLEL, GOAL, END_GOAL,
 OUTLINE, END_OUTLINE, PATH, END_PATH, CONCLUSION, END_CONCLUSION) = range(len(TAGS))

TAG_PATTERN = re.compile("|".join(re.escape(t) for t in TAGS))
CODE_OF_TAG = {t: i for i, t in enumerate(TAGS)}

# What the reference engine and training data put around the forced tags (DESIGN section 3):
# the newline before <Path> opens that branch, the one before <Conclusion> opens the conclusion.
PATH_SEED = "\n<Path>\n{label}:"
CONCLUSION_SEED = "\n<Conclusion>"
LABEL_PATTERN = re.compile(r"\s*([0-9]+(?:\.[0-9]+)*)\s*:")


def tag_token_ids(tokenizer) -> list[int]:
    """Ids of the 12 tags in ``tokenizer``; raises if any tag is missing or split into pieces."""
    ids = []
    for tag in TAGS:
        tid = tokenizer.convert_tokens_to_ids(tag)
        if tid is None or tid == tokenizer.unk_token_id or tokenizer.encode(tag, add_special_tokens=False) != [tid]:
            raise ValueError(
                f"tokenizer has no single token for {tag!r}; run multiverse.modeling_multiverse.add_multiverse_tokens first"
            )
        ids.append(tid)
    return ids
