"""The layout of what a KV cache holds, kept beside the cache and extended by each forward's new tokens.

With a cache, HF's ``generate`` hands the backbone only the newest tokens. Their segments and positions
depend on everything before them, so every row keeps its ``IncrementalParser`` (the one grammar) and the
cache's segment ids and visibility (the engine's ``LayoutBuffers``); a step feeds only its new tokens:
O(new tokens) of parsing per step instead of re-parsing the whole history (O(L^2) over a decode).

The state rides on the cache object itself, so it lives exactly as long as the cache and follows it through
``generate``'s steps. It knows the ids it holds: when the history it is handed differs (beam search reorders
rows, assisted decoding crops the cache, a cache is reused for another prompt), it is rebuilt from the history.
"""

import torch

from .kv_cache import LayoutBuffers
from .parser import IncrementalParser, _id_items
from .structure import REFERENCE
from .visibility import sees_every_stream

ATTRIBUTE = "multiverse_layout"
FLEX_BLOCK = 128  # flex_attention may index the mask function past the sequence, up to a block multiple
SHORT = 16  # a step feeding at most this many tokens per row looks each one up; longer ones group text with numpy


class CachedLayout:
    """Segments, visibility and positions of the ``length`` tokens a cache holds, for a batch of rows.

    Tokens whose 2D attention mask is 0 (padding) go to the void segment (0) and are not parsed, as in
    ``layout.compute_layout``; the parser's unit index counts real tokens only.
    """

    def __init__(self, tag_ids, batch_size: int, device, position_rule: str = REFERENCE):
        self.tag_ids = list(tag_ids)
        self.code_of = {int(t): c for c, t in enumerate(self.tag_ids)}
        self.parsers = [IncrementalParser(False, True, "tokens", None, position_rule) for _ in range(batch_size)]
        self.known_streams = [0] * batch_size  # streams whose visibility row is written
        self.fed = [0] * batch_size  # real tokens parsed per row
        self.length = 0
        self.open_view = False  # every token of the last extend is real and its stream sees every stream
        self.padded = False  # some token so far is padding (attention mask 0)
        self.buffers = LayoutBuffers(batch_size, FLEX_BLOCK, device)
        self.ids = torch.zeros(batch_size, FLEX_BLOCK, dtype=torch.long, device=device)

    @property
    def batch_size(self) -> int:
        return len(self.parsers)

    @property
    def segments(self) -> torch.Tensor:
        """[B, capacity] segment id per cache column; capacity is a multiple of FLEX_BLOCK, columns past
        ``length`` are void."""
        return self.buffers.segments

    @property
    def visibility(self) -> torch.Tensor:
        return self.buffers.visibility

    def holds(self, past_length: int, history: torch.Tensor | None) -> bool:
        """Whether this state describes a cache of ``past_length`` tokens whose ids start ``history``."""
        if past_length != self.length:
            return False
        if history is None or past_length == 0:
            return True
        if history.shape[0] != self.batch_size or history.shape[1] < past_length:
            return False
        return torch.equal(history[:, :past_length].to(self.ids.device), self.ids[:, :past_length])

    def extend(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Lay out ``input_ids`` [B, Q] (the next Q cache columns); returns their position ids [B, Q] (on CPU)."""
        batch, q_len = input_ids.shape
        if batch != self.batch_size:
            raise ValueError(f"the cache's layout holds {self.batch_size} rows, but input_ids has {batch}")
        start, end = self.length, self.length + q_len
        self._reserve(end)
        # Plain lists: a decode step lays out one token per row, where numpy's per-call cost would dominate.
        rows = input_ids.tolist()
        keep = [[1] * q_len] * batch if attention_mask is None else attention_mask.tolist()
        sids, positions, open_view = [], [], True
        for b in range(batch):
            real = [q for q in range(q_len) if keep[b][q]]
            seg, pos = [0] * q_len, [0] * q_len
            if real:
                seg_real, pos_real = self._feed(b, [rows[b][q] for q in real])
                for q, sid, p in zip(real, seg_real, pos_real):
                    seg[q], pos[q] = sid, p
                self._add_streams(b)
                open_view = open_view and all(sees_every_stream(self.parsers[b].streams[sid]) for sid in set(seg_real))
            open_view = open_view and len(real) == q_len
            self.padded = self.padded or len(real) < q_len
            sids.append(seg)
            positions.append(pos)
        self.open_view = open_view
        self.buffers.segments[:, start:end] = torch.tensor(sids).to(self.ids.device, non_blocking=True)
        self.ids[:, start:end] = input_ids
        self.length = end
        return torch.tensor(positions)

    def _feed(self, b: int, tokens: list) -> tuple[list, list]:
        """Parse ``tokens`` of row ``b``; (segment id, position id) of each, read from the parser's runs."""
        parser, first = self.parsers[b], self.fed[b]
        run_index = max(len(parser.runs) - 1, 0)  # the last run may grow over the new tokens
        if len(tokens) <= SHORT:
            for i, token in enumerate(tokens, start=first):
                parser.feed(self.code_of.get(token), i, i + 1)
        else:
            for code, s, e in _id_items(tokens, self.tag_ids):
                parser.feed(code, first + s, first + e)
        last = first + len(tokens)
        self.fed[b] = last
        seg, pos = [], []
        # The same expansion as layout.layout_from_parse: a run's tokens take consecutive positions.
        for run_start, run_end, sid, start_pos in parser.runs[run_index:]:
            lo, hi = max(run_start, first), min(run_end, last)
            if hi > lo:
                seg.extend([sid] * (hi - lo))
                pos.extend(range(start_pos + lo - run_start, start_pos + hi - run_start))
        return seg, pos

    def _add_streams(self, b: int):
        """Visibility rows of the streams the parser opened, as the engine writes them (``add_stream``: the
        parent's row less the earlier siblings, O(S) tensor work per stream, no loop over the streams)."""
        streams = self.parsers[b].streams
        for stream in streams[self.known_streams[b]:]:
            self.buffers.add_stream(b, stream)
        self.known_streams[b] = len(streams)

    def _reserve(self, length: int):
        capacity = self.buffers.segments.shape[1]
        if length <= capacity:
            return
        capacity = -(-max(length, 2 * capacity) // FLEX_BLOCK) * FLEX_BLOCK
        grown = LayoutBuffers(self.batch_size, capacity, self.ids.device)
        grown.segments[:, :self.length] = self.buffers.segments[:, :self.length]
        grown.visibility = self.buffers.visibility
        ids = torch.zeros(self.batch_size, capacity, dtype=torch.long, device=self.ids.device)
        ids[:, :self.length] = self.ids[:, :self.length]
        self.buffers, self.ids = grown, ids


def layout_for_cache(cache, config, input_ids, past_length: int, history, attention_mask):
    """The cache's layout, extended by ``input_ids``: (layout, position ids [B, Q] of the new tokens).

    ``history`` ([B, >= past_length] ids, optional) lets a stale or missing state be rebuilt; without it a
    cache that already holds tokens must carry its layout.
    """
    q_len = input_ids.shape[1]
    if attention_mask is not None and attention_mask.shape[1] < past_length + q_len:
        raise ValueError(f"attention_mask covers {attention_mask.shape[1]} tokens, but the cache holds {past_length} "
                         f"and input_ids adds {q_len}: it must cover both")
    past_mask = None if attention_mask is None else attention_mask[:, -(past_length + q_len):-q_len]
    new_mask = None if attention_mask is None else attention_mask[:, -q_len:]
    state = getattr(cache, ATTRIBUTE, None)
    if state is None or not state.holds(past_length, history):
        if past_length and history is None:
            raise ValueError("MultiverseModel: the cache holds tokens but no layout of them; pass mv_history_ids "
                             "(every id so far) or use a cache this model filled")
        state = CachedLayout(config.multiverse_tag_ids, input_ids.shape[0], input_ids.device,
                             getattr(config, "multiverse_position_rule", REFERENCE))
        if past_length:
            state.extend(history[:, :past_length], past_mask)
        setattr(cache, ATTRIBUTE, state)
    return state, state.extend(input_ids, new_mask)
