"""A LogitsProcessor that keeps generation inside the Multiverse grammar and its limits.

The state of each row is a ``structure.Stream`` (the same grammar the parser and engine use); this
class only turns "which tags may come next" into a score mask. In plain ``generate`` it follows each
row linearly with an ``IncrementalParser``; the parallel engine hands it the branch streams directly.

With the tokenizer it also bans tags spelled with ordinary tokens (``SpelledTags``): the engine and parser read
tags by id, so ``<`` ``Path`` ``>`` is text to them, but decoded and re-encoded (saved, graded, trained on) it
becomes the real tag and the structure changes.
"""

import weakref
from collections import deque

import torch
from transformers import LogitsProcessor

from .budget_cuts import MAX_GROWTH, cost_after, local_cost, own_closing
from .parser import IncrementalParser
from .tags import OUTLINE, PARALLEL, TAGS


class MultiverseStructureLogitsProcessor(LogitsProcessor):
    r"""
    Args:
        tag_ids (`list[int]`): the 12 tag ids, in `TAGS` order (`config.multiverse_tag_ids`).
        max_branches (`int`): most outlines (so paths) per block.
        max_depth (`int`): most nested blocks; `<Parallel>` is banned in a stream this deep.
        max_path_tokens (`int`, *optional*): most decode steps a path may take (a nested block counted by its
            longest path), its closing `</Path>` included; a path that reaches it is closed. A block still open
            inside it is finished first, the shortest way the grammar allows (an empty outline, each path's seed
            and `</Path>`, the conclusion's seed and tags), never abandoned: those steps come on top.
        eos_token_id (`int | list[int]`, *optional*): allowed only at top level, outside any block.
        grammar (`bool`, defaults to `True`): enforce the grammar's tag order. With `False` only the limits
            stay: depth, branches per block and the path budget.
        seeds (`Seeds`, *optional*): in plain `generate`, force the tokens the parallel engine forces: each
            path's `\n<Path>\n{label}:` and the `\n<Conclusion>` after the last path. The training layout hides
            sibling paths, so a path cannot know its own label; without seeds autoregressive decoding guesses
            it (a trained toy model wrote path 2 twice).
        tokenizer (*optional*): the tokenizer whose ids are decoded. With it, an ordinary token that would complete a
            tag's text together with the row's preceding text is banned, so the decoded output never holds a tag
            string that is not a tag token (which re-encoding would turn into one). Without it this check is
            off: the processor knows no token's text.
    """

    def __init__(self, tag_ids, max_branches: int = 16, max_depth: int = 4, max_path_tokens: int | None = None,
                 eos_token_id=None, grammar: bool = True, seeds=None, tokenizer=None):
        if len(tag_ids) != len(TAGS):
            raise ValueError(f"`tag_ids` must list the {len(TAGS)} tag ids in TAGS order, got {len(tag_ids)}")
        if not isinstance(max_branches, int) or max_branches < 1:
            raise ValueError(f"`max_branches` has to be a positive integer, but is {max_branches!r}")
        if not isinstance(max_depth, int) or max_depth < 0:
            raise ValueError(f"`max_depth` has to be a non-negative integer, but is {max_depth!r}; 0 forbids blocks")
        if max_path_tokens is not None and (not isinstance(max_path_tokens, int) or max_path_tokens < 4):
            raise ValueError(f"`max_path_tokens` has to be an integer >= 4 (the path seed alone takes ~4), "
                             f"but is {max_path_tokens!r}")
        self.tag_ids = torch.tensor(list(tag_ids), dtype=torch.long)
        self.max_branches, self.max_depth, self.max_path_tokens = max_branches, max_depth, max_path_tokens
        self.grammar = grammar
        eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.eos_ids = torch.tensor(eos, dtype=torch.long)
        self._code_of = {int(t): c for c, t in enumerate(tag_ids)}
        self.seeds = seeds
        self._cols, self._banned_key, self._banned = None, None, None
        self._rows: list[IncrementalParser] = []
        self._seen: list[int] = []
        self._forced: list[deque] = []
        self.spelled = None if tokenizer is None else SpelledTags.of(tokenizer, list(tag_ids))

    # --- shared with the engine ----------------------------------------------------------------------
    def row_rules(self, stream) -> tuple[list[bool], bool, int | None]:
        """(allowed per tag, eos allowed, the tag code it must take now or None) for a stream."""
        left, force = self.path_steps_left(stream), None
        closing = local_cost(stream) if left is not None else 0
        if left is not None and left <= closing:  # what is left is what closing takes: close, tag by tag
            force = own_closing(stream)[0]
        if self.grammar:
            allowed = stream.allowed_tags(self.max_depth, self.max_branches)
            allowed, eos_ok = [c in allowed for c in range(len(TAGS))], not stream.is_branch and stream.top is None
        else:
            allowed, eos_ok = [True] * len(TAGS), True
            allowed[PARALLEL] = stream.depth < self.max_depth
            allowed[OUTLINE] = stream.top is None or len(stream.top.outlines) < self.max_branches
        if left is not None and left <= closing + MAX_GROWTH:  # no block or outline whose closing would not fit
            for code in (PARALLEL, OUTLINE):
                allowed[code] = allowed[code] and 1 + cost_after(stream, code) <= left
        return allowed, eos_ok, force

    def path_steps_left(self, stream) -> int | None:
        """Decode steps ``stream`` may still take under ``max_path_tokens``, its closing tags included: the fewest
        left to it or to any path it sits in (a nested path counts toward every path around it); None without a
        path budget. When only its closing fits, the stream closes the shortest way the grammar allows
        (``budget_cuts.own_closing``): a block open inside it is finished, never abandoned, and before that no
        block or outline opens whose closing would not fit. Forced seeds of the paths such a closing forks, and
        the closing of the paths around it, come on top."""
        if self.max_path_tokens is None or not stream.is_branch or not stream.opened:
            return None
        left, path = self.max_path_tokens, stream
        while path.is_branch:
            left = min(left, self.max_path_tokens - (stream.next_step - path.start_step))
            path = path.parent
        return left

    def mask_scores(self, scores: torch.FloatTensor, rules: list, tails: list | None = None) -> torch.FloatTensor:
        """Pure tensor math: ban disallowed tags (and eos), or leave only the closing tag a row must take now.
        ``tails``: each row's last ``TAIL_TOKENS`` ids before the new token; with a tokenizer, the ordinary tokens
        that would complete a spelled tag after them are banned too."""
        n_eos = len(self.eos_ids)
        # A ban per (row, tag or eos column); the rules rarely change between steps, so is the tensor kept.
        key = [(tuple(allowed), eos_ok) for allowed, eos_ok, _ in rules]
        if key != self._banned_key or self._banned.device != scores.device:
            self._banned = torch.tensor([[not a for a in allowed] + [not eos_ok] * n_eos for allowed, eos_ok in key],
                                        dtype=torch.bool).reshape(len(rules), len(self.tag_ids) + n_eos).to(scores.device)
            self._banned_key = key
        banned = self._banned
        columns = self._columns(scores.device)
        neg = torch.finfo(scores.dtype).min
        scores = scores.index_copy(1, columns, scores[:, columns].masked_fill(banned, neg))
        if self.spelled is not None and tails is not None:
            scores = self.spelled.ban(scores, tails)
        if all(r[2] is None for r in rules):
            return scores
        closing = [-1 if r[2] is None else int(self.tag_ids[r[2]]) for r in rules]
        return _force(scores, torch.tensor(closing, device=scores.device))

    def _columns(self, device) -> torch.Tensor:
        """Tag ids then eos ids, on ``device`` (kept: the same every step)."""
        if self._cols is None or self._cols.device != torch.device(device):
            self._cols = torch.cat([self.tag_ids, self.eos_ids]).to(device)
        return self._cols

    # --- plain HF generate: follow every row linearly -----------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self._rows or len(self._rows) != input_ids.shape[0] or input_ids.shape[1] < max(self._seen):
            self._rows = [IncrementalParser(False, True, "tokens", None) for _ in range(input_ids.shape[0])]
            self._seen = [0] * input_ids.shape[0]
            self._forced = [deque() for _ in range(input_ids.shape[0])]
        tails = None if self.spelled is None else input_ids[:, -TAIL_TOKENS:].tolist()
        rules, forced = [], []
        for b, parser in enumerate(self._rows):
            queue = self._forced[b]
            for i, token in enumerate(input_ids[b, self._seen[b]:].tolist(), start=self._seen[b]):
                if queue and queue.popleft() != token:
                    queue.clear()  # the row left the seed (another processor overrode it): stop forcing
                streams, cur = len(parser.streams), parser.cur
                code = self._code_of.get(token)
                parser.feed(code, i, i + 1)
                if self.seeds is not None and code is not None:
                    self._queue_seed(b, input_ids[b], parser, streams, cur)
            self._seen[b] = input_ids.shape[1]
            rules.append(self.row_rules(parser.cur))
            forced.append(queue[0] if queue else -1)
        scores = self.mask_scores(scores, rules, tails)
        return _force(scores, torch.tensor(forced, device=scores.device)) if max(forced) >= 0 else scores

    def _queue_seed(self, b: int, row: torch.Tensor, parser, streams_before: int, cur_before):
        """After a tag that opened a path or merged a block, queue the tokens the engine would force there."""
        if len(parser.streams) > streams_before:  # </Goal> or a </Path> opened the next path
            child, parent = parser.cur, parser.cur.parent
            k = len(parent.top.paths) - 1
            outline = parent.top.outlines[k]
            ids = [t for t in row[outline.start + 1:outline.end - 1].tolist() if t not in self._code_of]
            child.label, seed = self.seeds.path(parent, k, ids, self.tag_ids.tolist())
        elif cur_before.is_branch and parser.cur is cur_before.parent:  # the last </Path>: the block merged
            seed = self.seeds.conclusion(self.tag_ids.tolist())
        else:
            return
        self._forced[b].clear()
        self._forced[b].extend(seed)


def _force(scores: torch.FloatTensor, token_ids: torch.LongTensor) -> torch.FloatTensor:
    """Rows whose ``token_ids`` entry is >= 0 may emit only that token; the others keep their scores."""
    only = torch.full_like(scores, torch.finfo(scores.dtype).min)
    only.scatter_(1, token_ids.clamp(min=0)[:, None], 0.0)
    return torch.where((token_ids >= 0)[:, None], only, scores)


# Preceding tokens a row hands over: a tag's proper prefix has at most 12 characters (``</Conclusion>`` less its
# ``>``); twice that leaves room for tokens that decode to nothing.
LONGEST_TAG = max(len(t) for t in TAGS)
TAIL_TOKENS = 2 * LONGEST_TAG
# Characters a tag's proper prefix holds after its ``<``: a piece with another one cannot sit inside a prefix.
_TAG_BODY = frozenset("".join(t[1:-1] for t in TAGS))


class SpelledTags:
    """Which ordinary tokens would complete a tag's text after a row's preceding text.

    A tag string holds one ``<`` (first) and one ``>`` (last), so it never overlaps a tag token's text; what
    matters of a row is the text from its last ``<``, when that is a proper prefix of a tag (``_complete``: that
    prefix -> the tokens whose text starts with the rest of one of its tags). A token that holds a whole tag string
    is banned everywhere. Built once per tokenizer (decoding every id takes about a second on Qwen's vocabulary)."""

    _cache = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, tokenizer, tag_ids: list) -> "SpelledTags":
        try:
            known = cls._cache.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable: build it for this processor only
            known = {}
        if tuple(tag_ids) not in known:
            known[tuple(tag_ids)] = cls(tokenizer, tag_ids)
        return known[tuple(tag_ids)]

    def __init__(self, tokenizer, tag_ids: list):
        # One id at a time, as a row's text is the concatenation of its tokens' texts. Byte-level pieces of a
        # multi-byte character decode to U+FFFD here, but ASCII (every tag character) never depends on neighbours.
        self.texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
        self.tag_ids = tags = frozenset(tag_ids)
        ending = [(i, text) for i, text in enumerate(self.texts) if ">" in text and i not in tags]
        complete: dict[str, set] = {}
        for tag in TAGS:
            for split in range(1, len(tag)):
                rest = tag[split:]
                complete.setdefault(tag[:split], set()).update(i for i, text in ending if text.startswith(rest))
        self.complete = {prefix: torch.tensor(sorted(ids), dtype=torch.long) for prefix, ids in complete.items()}
        self.whole = torch.tensor([i for i, text in ending if any(tag in text for tag in TAGS)], dtype=torch.long)
        self._on: dict = {}  # (prefix or None, device) -> ids there

    def open_prefix(self, tail: list) -> str | None:
        """The tag prefix the text of ``tail`` (token ids) ends with, if any."""
        text = ""
        for token in reversed(tail):
            piece = self.texts[token] if 0 <= token < len(self.texts) else ""
            text = piece + text
            start = text.rfind("<")
            if start >= 0:
                return text[start:] if text[start:] in self.complete else None
            if len(text) >= LONGEST_TAG - 1 or not _TAG_BODY.issuperset(piece):
                return None  # no '<' close enough, or a character no tag prefix holds
        return None

    def ids(self, prefix, device) -> torch.Tensor:
        key = (prefix, torch.device(device))
        if key not in self._on:
            self._on[key] = (self.whole if prefix is None else self.complete[prefix]).to(device)
        return self._on[key]

    def ban(self, scores: torch.FloatTensor, tails: list) -> torch.FloatTensor:
        neg = torch.finfo(scores.dtype).min
        if len(self.whole):
            scores = scores.index_fill(1, self.ids(None, scores.device), neg)
        # Most rows end in text no tag prefix can end: they cost one lookup.
        rows = [(r, p) for r, p in ((r, self.open_prefix(tail)) for r, tail in enumerate(tails)) if p is not None]
        if not rows:
            return scores
        cols = [self.ids(p, scores.device) for _, p in rows]
        index = torch.cat([torch.full_like(c, r) for (r, _), c in zip(rows, cols)])
        return scores.index_put((index, torch.cat(cols)), torch.tensor(neg, dtype=scores.dtype, device=scores.device))
