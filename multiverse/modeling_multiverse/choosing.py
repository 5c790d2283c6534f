"""Choosing the next token of every sampled branch row, and the stopping criteria, over what each row can see.

Per row, in order: HF-style logits processors (``no_repeat_ngram_size``, ``bad_words_ids``, custom ones, ...) with
the ids the branch can see as ``input_ids``; the structure processor's grammar and limits (with a tokenizer, no
token that completes a tag spelled with ordinary tokens, over the branch's ``tail``), with eos held back until
``min_new_tokens`` and no tag whose closing would not fit in ``max_new_tokens`` (``budget_cuts``); then the
repetition penalty, the warpers and the draw (``sampling.BranchSampler``).
"""

from collections import Counter

import torch

from .budget_cuts import MAX_GROWTH, growth
from .placement import agree_tokens
from .sampling import forced_rows, visible_ids
from .structure_processor import TAIL_TOKENS
from .tags import OUTLINE, PARALLEL


class TokenChooser:
    def __init__(self, structure, sampler, max_new_tokens: int, min_new_tokens: int = 0, processors=None,
                 criteria=None, pad_id: int = 0, vocab_size: int = 0, tp_group=None):
        self.structure, self.sampler = structure, sampler
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        self.processors, self.criteria = processors, criteria
        self.pad_id, self.vocab_size, self.tp_group = pad_id, vocab_size, tp_group

    def __call__(self, raw, sample: list, states: list, emitting: Counter):
        """Tokens (a list: the one host sync of the step), processed scores and rules of the ``sample`` rows.
        ``raw``: their logits; ``states``: their output rows; ``emitting``: tokens each output row emits this step."""
        scores = raw
        if self.processors is not None:
            ids = visible_ids([br.visible_tokens() for br in sample], self.pad_id, raw.device)
            scores = self.processors(ids, raw)
        sampled = Counter(br.sample for br in sample)
        rules = [self.rules(br, state, emitting[br.sample], sampled[br.sample]) for br, state in zip(sample, states)]
        rows = [br.presence_row for br in sample]
        tails = None if self.structure.spelled is None else [self.tail(br) for br in sample]
        scores = self.sampler.process(self.structure.mask_scores(scores, rules, tails), rows)
        tokens = self.sampler.choose(scores, [br.sample for br in sample])
        tokens = agree_tokens(tokens, self.tp_group)  # tensor parallel: every rank emits rank 0's tokens
        self.sampler.observe(rows, tokens)
        return tokens.tolist(), scores, rules

    def rules(self, br, state, emitting: int, sampled: int):
        """The structure processor's rules for a row, plus eos held back until ``min_new_tokens``, and no tag whose
        closing would not fit: each of the output row's ``sampled`` rows may grow the closing by an equal share
        of what is left of ``max_new_tokens`` once its ``emitting`` tokens are paid."""
        allowed, eos_ok, force = self.structure.row_rules(br.stream)
        eos_ok = eos_ok and state.generated >= self.min_new_tokens
        share = (self.max_new_tokens - state.generated - state.closing - emitting) // sampled
        if share < MAX_GROWTH:
            for code in (PARALLEL, OUTLINE):
                if allowed[code] and growth(br.stream, code) > share:
                    allowed[code] = False
        return allowed, eos_ok, force

    def tail(self, br) -> list:
        """The last ``TAIL_TOKENS`` ids the branch sees (for spelled tags). Its own tokens since its last merge end
        what it sees; when they are fewer and hold no tag (text before a tag cannot join a spelled one), as just
        after the root's start, its visible history is walked."""
        own = br.tokens[br.forks[-1][0] if br.forks else 0:]
        if len(own) >= TAIL_TOKENS or any(t in self.structure.spelled.tag_ids for t in own):
            return own[-TAIL_TOKENS:]
        return br.visible_tokens()[-TAIL_TOKENS:]

    def stops(self, emitted: list, step_scores: dict, device) -> list[bool]:
        """The stopping criteria for each branch that emitted this step, over the ids it can see and the scores its
        token was drawn from (a forced token's: only itself)."""
        ids = visible_ids([br.visible_tokens() for br in emitted], self.pad_id, device)
        forced = forced_rows([br.tokens[-1] for br in emitted], self.vocab_size, device)
        scores = torch.stack([step_scores.get(br, forced[i]) for i, br in enumerate(emitted)])
        return self.criteria(ids, scores).tolist()
