"""Position ids against an independent implementation of the reference training rule (DESIGN section 3).

``reference_positions`` is written from the rule's description, over token ids, without the package's parser:
positions run 0, 1, 2, ... and jump at two named tags, counting on from there: every ``<Path>`` of a block
gets g + 1 (g = pos(</Goal>) of that block), its ``<Conclusion>`` g + L + 1 (L = the largest
pos(</Path>) - g over its paths). Our layout must agree on every token of real Multiverse-32B transcripts
(real Qwen2.5 tokenizer) except the separators before paths 2..n, which get their own ``<Path>``'s position.
"""

import pytest
import torch

from multiverse.modeling_multiverse import MultiverseConfig, compute_layout
from multiverse.modeling_multiverse.parser import StructureError, parse
from multiverse.modeling_multiverse.tags import TAGS, tag_token_ids
from multiverse.trl_recipes import MultiverseDataCollator
from multiverse.transcripts import read_transcript
from samples import corpus_sets
from structures import TAG_IDS, build

GOAL_END, PATH_OPEN, PATH_CLOSE, CONCLUSION = (TAGS.index(t) for t in ("</Goal>", "<Path>", "</Path>",
                                                                        "<Conclusion>"))
PARALLEL_OPEN, PARALLEL_CLOSE = TAGS.index("<Parallel>"), TAGS.index("</Parallel>")


def reference_positions(ids, tag_ids):
    """(positions, separators): the reference rule, and the indices of the tokens between a block's </Path>
    and its next <Path> (the separators the rule places after the previous path)."""
    code = {t: c for c, t in enumerate(tag_ids)}
    blocks = []  # per open block: {"g": pos(</Goal>) or None, "longest": L so far, "in_path": bool}
    positions, separators, gap = [], [], []
    pos = -1
    for i, token in enumerate(ids):
        pos += 1
        c = code.get(token)
        top = blocks[-1] if blocks else None
        if c == PARALLEL_OPEN:
            blocks.append({"g": None, "longest": 0, "in_path": False, "paths": 0})
        elif top is not None and c == GOAL_END and top["g"] is None:
            top["g"] = pos
        elif top is not None and c == PATH_OPEN and top["g"] is not None and not top["in_path"]:
            pos = top["g"] + 1
            top["in_path"] = True
            if top["paths"]:
                separators += gap
            top["paths"] += 1
        elif top is not None and c == PATH_CLOSE and top["in_path"]:
            top["in_path"] = False
            top["longest"] = max(top["longest"], pos - top["g"])
            gap = []
        elif top is not None and c == CONCLUSION and top["g"] is not None and not top["in_path"]:
            pos = top["g"] + top["longest"] + 1
        elif top is not None and c == PARALLEL_CLOSE and not top["in_path"]:
            blocks.pop()
        if top is not None and not top["in_path"] and c is None and top["paths"]:
            gap.append(i)  # text after a path of the innermost block, before what comes next
        elif c is not None:
            gap = [] if c != PATH_CLOSE else gap
        positions.append(pos)
    return positions, separators


@pytest.fixture(scope="module")
def tagged(qwen_tokenizer):
    return qwen_tokenizer, tag_token_ids(qwen_tokenizer)


def corpus_ids(tokenizer, path):
    transcript = read_transcript(path)
    return tokenizer.encode(transcript.prompt + transcript.completion, add_special_tokens=False)


@pytest.mark.parametrize("files, expected", corpus_sets(dict(strict=4, paths=20), dict(strict=22, paths=110)))
def test_positions_equal_the_reference_rule_on_real_transcripts(tagged, files, expected):
    tokenizer, tag_ids = tagged
    strict = checked_paths = differing = 0
    for path in files:
        ids = corpus_ids(tokenizer, path)
        layout = compute_layout(torch.tensor(ids), tag_ids)
        try:
            parse(ids, tag_ids, strict=True, decode=tokenizer.decode)
        except StructureError:
            # Tolerant reading of a truncated or overrun transcript: laid out, never a crash.
            assert layout.position_ids.shape == (len(ids),) and int(layout.position_ids.min()) >= 0
            continue
        strict += 1
        expected_pos, separators = reference_positions(ids, tag_ids)
        ours = layout.position_ids.tolist()
        differ = [i for i in range(len(ids)) if ours[i] != expected_pos[i]]
        assert set(differ) <= set(separators), f"{path}: tokens {differ[:10]} differ outside the path separators"
        for i in separators:  # a separator before path k >= 2 counts from its own <Path>'s position
            nxt = next(j for j in range(i, len(ids)) if ids[j] == tag_ids[PATH_OPEN])
            first = next(j for j in range(i, -1, -1) if ids[j] == tag_ids[PATH_CLOSE]) + 1
            assert ours[i] == expected_pos[nxt] + (i - first)
        differing += len(differ)
        checked_paths += sum(t == tag_ids[PATH_OPEN] for t in ids)
    assert strict >= expected["strict"] and checked_paths >= expected["paths"]
    assert differing > 0  # the separators did move: the comparison can tell the rules apart


def test_reference_rule_by_hand():
    """A two-path block with a one-token separator: the named tags and what follows them."""
    nl, text = 5, 30
    p, ep, par, epar, goal, egoal, out, eout, concl, econcl = (TAG_IDS[TAGS.index(t)] for t in (
        "<Path>", "</Path>", "<Parallel>", "</Parallel>", "<Goal>", "</Goal>", "<Outline>", "</Outline>",
        "<Conclusion>", "</Conclusion>"))
    ids = [text, par, goal, out, eout, out, eout, egoal,  # </Goal> at 7
           nl, p, text, text, ep,  # path 1: \n and <Path> at 8, </Path> at 11
           nl, p, text, ep,  # path 2: its \n (the separator) and <Path> at 8, </Path> at 10
           nl, concl, text, econcl, epar]  # \n after the last path: 11; <Conclusion>: 7 + 4 + 1
    want = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 8, 8, 9, 10, 11, 12, 13, 14, 15]
    assert compute_layout(torch.tensor(ids), TAG_IDS).position_ids.tolist() == want
    expected, separators = reference_positions(ids, TAG_IDS)
    assert separators == [13] and [e for i, e in enumerate(expected) if i != 13] == want[:13] + want[14:]
    old = compute_layout(torch.tensor(ids), TAG_IDS, position_rule="branch-start").position_ids.tolist()
    assert old[8:10] == [8, 9] and old[17:19] == [13, 14]  # the rule models trained before kept


def test_the_rule_is_recorded_in_the_config_and_reaches_the_collator():
    assert MultiverseConfig().multiverse_position_rule == "reference"
    assert MultiverseConfig.from_dict({"model_type": "qwen2"}).multiverse_position_rule == "reference"
    assert MultiverseConfig(multiverse_position_rule="branch-start").to_dict()["multiverse_position_rule"] == \
        "branch-start"
    with pytest.raises(ValueError, match="multiverse_position_rule"):
        MultiverseConfig(multiverse_position_rule="legacy")
    built = build([("text", [21]), ("block", [[("text", [30, 31])], [("text", [32])]], [33])])
    for rule in ("reference", "branch-start"):
        batch = MultiverseDataCollator(TAG_IDS, 0, position_rule=rule)([{"input_ids": built.ids}])
        assert batch["position_ids"][0].tolist() == compute_layout(torch.tensor(built.ids), TAG_IDS,
                                                                   position_rule=rule).position_ids.tolist()
    assert batch["position_ids"][0].tolist() != built.positions  # built follows the reference rule
    with pytest.raises(ValueError, match="position_rule"):
        MultiverseDataCollator(TAG_IDS, 0, position_rule="legacy")
