"""A tag spelled with ordinary tokens (``<`` ``Path`` ``>``) is text to the engine and parser, which read tags by
id, but decoded and re-encoded (saved, graded, trained on) it becomes the real tag: the structure processor bans
the token that would complete one, in both decoding modes."""

import torch
from transformers import LogitsProcessor

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.modeling_multiverse import TAGS, tag_token_ids
from multiverse.modeling_multiverse.structure_processor import MultiverseStructureLogitsProcessor

BLOCK = "<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n"


def spelling(tokenizer):
    """Next-token wishes that spell ``<Path>`` from ordinary tokens over and over, and close the goal after the
    prompt's last newline so the block forks."""
    lt, word, gt = (tokenizer.convert_tokens_to_ids(t) for t in ("<", "Path", ">"))
    assert None not in (lt, word, gt) and tokenizer.encode("<Path>") == [tag_token_ids(tokenizer)[TAGS.index("<Path>")]]
    return {lt: word, word: gt, tokenizer.encode("\n")[0]: tag_token_ids(tokenizer)[TAGS.index("</Goal>")]}, lt


def structure(ids, tag_ids):
    return [t for t in ids if t in set(tag_ids)]


def assert_survives_reencoding(tokenizer, ids):
    """The text re-encodes to the same tags in the same order, and decodes to the same text."""
    text = tokenizer.decode(ids)
    again = tokenizer.encode(text, add_special_tokens=False)
    tag_ids = tag_token_ids(tokenizer)
    assert structure(again, tag_ids) == structure(ids, tag_ids), text
    assert tokenizer.decode(again) == text


def test_parallel_engine_never_spells_a_tag(tokenizer):
    table, lt = spelling(tokenizer)
    model = TableLM(tokenizer, table, default=lt)
    prompt = tokenizer.encode(BLOCK)
    runs = {}
    for name, tok in (("checked", tokenizer), ("unchecked", None)):  # no tokenizer: the char table seeds, check off
        out = run_engine(model, [prompt], max_new_tokens=60, max_path_tokens=12, tokenizer=tok)
        assert out.multiverse[0]["forks"] == 1  # the spelling ran in the root, both paths and the conclusion
        runs[name] = out.sequences[0].tolist()
    # Without the check the mock does spell it: the test can fail.
    assert "<Path>" in tokenizer.decode([t for t in runs["unchecked"][len(prompt):]
                                         if t not in tag_token_ids(tokenizer)])
    checked = runs["checked"]
    assert_survives_reencoding(tokenizer, checked)
    assert "<Path<Path" in tokenizer.decode(checked[len(prompt):])  # it kept spelling, only the '>' was banned


class Wishes(LogitsProcessor):
    """What ``TableLM`` scripts, for a real model under HF's generate: the table's wish for the last token wins."""

    def __init__(self, table, default):
        self.table, self.default = table, default

    def __call__(self, input_ids, scores):
        wished = torch.full_like(scores, -10.0)
        wished[:, self.default] = 1.0
        for b, last in enumerate(input_ids[:, -1].tolist()):
            if last in self.table:
                wished[b, self.table[last]] = 5.0
        return wished


def test_autoregressive_decoding_never_spells_a_tag(tiny_model, tokenizer):
    table, lt = spelling(tokenizer)
    prompt = torch.tensor([tokenizer.encode(BLOCK)])
    runs = {}
    for name, tok in (("checked", tokenizer), ("unchecked", None)):
        out = tiny_model.generate(prompt, multiverse_parallel=False, max_new_tokens=60, max_path_tokens=12,
                                  do_sample=False, logits_processor=[Wishes(table, lt)], eos_token_id=None,
                                  pad_token_id=tokenizer.pad_token_id, tokenizer=tok)
        runs[name] = out[0].tolist()
    tags = tag_token_ids(tokenizer)
    assert structure(runs["checked"], tags).count(tags[TAGS.index("<Path>")]) == 2  # it forked into two paths
    assert "<Path>" in tokenizer.decode([t for t in runs["unchecked"][prompt.shape[1]:] if t not in tags])
    assert_survives_reencoding(tokenizer, runs["checked"])
    assert "<Path<Path" in tokenizer.decode(runs["checked"][prompt.shape[1]:])


def banned_columns(scores, before, skip):
    return {c for c in (scores != before).nonzero()[:, 0].tolist() if c not in skip}


def test_processor_bans_exactly_the_completing_tokens(qwen_tokenizer):
    tok = qwen_tokenizer
    tags = tag_token_ids(tok)
    texts = tok.batch_decode([[i] for i in range(len(tok))], clean_up_tokenization_spaces=False)
    rows = {
        "open </Think": tok.encode("so the answer is </") + [tok.convert_tokens_to_ids("Think")],
        "open <Path": tok.encode("x <") + [tok.convert_tokens_to_ids("Path")],
        "plain text": tok.encode("so the answer is 5"),
        "after a real tag": tok.encode("so <Path>"),  # the tag token's text cannot start a spelled tag
        "open </Th": tok.encode("so </") + [tok.convert_tokens_to_ids("Th")],  # no Qwen token starts with "ink>"
    }
    assert rows["after a real tag"][-1] == tags[TAGS.index("<Path>")]
    width = max(len(r) for r in rows.values())
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows.values()])
    processor = MultiverseStructureLogitsProcessor(tags, grammar=False, tokenizer=tok)
    before = torch.zeros(len(rows), len(tok))
    scores = processor(input_ids, before.clone())
    for b, (name, row) in enumerate(rows.items()):
        # Brute force over the vocabulary: the tokens after which the text holds a tag string it did not.
        tail = tok.decode(row[-8:])
        expected = {i for i, t in enumerate(texts) if i not in tags
                    and any(tag in tail + t and tag not in tail for tag in TAGS)}
        assert banned_columns(scores[b], before[b], tags) == expected, name
        assert bool((scores[b, sorted(expected)] == torch.finfo(scores.dtype).min).all())
    # The cases mean something: ">" and its longer pieces (">\n", ...) complete the open tags, the rest ban nothing.
    for b in (0, 1):
        banned = banned_columns(scores[b], before[b], tags)
        assert tok.convert_tokens_to_ids(">") in banned and len(banned) > 10
        assert all(texts[i].startswith(">") for i in banned)
    assert not any(banned_columns(scores[b], before[b], tags) for b in (2, 3, 4))
    # Without the tokenizer the check is off.
    off = MultiverseStructureLogitsProcessor(tags, grammar=False)(input_ids, before.clone())
    assert not banned_columns(off[1], before[1], tags)
