"""Turn one step's logits (one row per decoding branch) into tokens, with the usual HF settings.

The warpers are transformers' own, in the order ``GenerationMixin`` applies them: temperature, top-h, top-k,
top-p, min-p, typical-p, epsilon and eta cutoffs, then ``renormalize_logits``. The repetition penalty is
applied over each branch's own *visible* history (prompt, ancestors, itself; not its siblings), kept as one
presence row per branch so it never needs the ids in a padded tensor.
"""

import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper, EtaLogitsWarper, LogitNormalization, MinPLogitsWarper, TemperatureLogitsWarper,
    TopHLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper,
)


class BranchSampler:
    def __init__(self, generation_config, batch_size: int, vocab_size: int, device, seed: int | None = None):
        gc = generation_config
        self.do_sample = bool(gc.do_sample)
        self.penalty = gc.repetition_penalty if gc.repetition_penalty not in (None, 1.0) else None
        if self.penalty is not None and self.penalty <= 0:
            raise ValueError(f"`repetition_penalty` has to be a strictly positive float, but is {self.penalty}")
        self.warpers = LogitsProcessorList()
        if self.do_sample:
            if gc.temperature is not None and gc.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(gc.temperature))
            if gc.top_h is not None:
                self.warpers.append(TopHLogitsWarper(gc.top_h))
            if gc.top_k:
                self.warpers.append(TopKLogitsWarper(gc.top_k))
            if gc.top_p is not None and gc.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(gc.top_p))
            if gc.min_p is not None:
                self.warpers.append(MinPLogitsWarper(gc.min_p))
            if gc.typical_p is not None and gc.typical_p < 1.0:
                self.warpers.append(TypicalLogitsWarper(gc.typical_p))
            if gc.epsilon_cutoff is not None and 0.0 < gc.epsilon_cutoff < 1.0:
                self.warpers.append(EpsilonLogitsWarper(gc.epsilon_cutoff))
            if gc.eta_cutoff is not None and 0.0 < gc.eta_cutoff < 1.0:
                self.warpers.append(EtaLogitsWarper(gc.eta_cutoff, device=device))
        if gc.renormalize_logits:
            self.warpers.append(LogitNormalization())
        # One generator per output row (seed + row, or the row's own seed from a list): a row samples the same tokens
        # whatever else decodes beside it.
        self.generators = None
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + b for b in range(batch_size)]
            if len(seeds) != batch_size or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                raise ValueError(f"seed={seed!r}: give one int (row r gets seed + r) or one int per output row "
                                 f"({batch_size})")
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.vocab_size, self.device = vocab_size, device
        self.presence = torch.zeros(0, vocab_size, dtype=torch.bool, device=device) if self.penalty else None
        self.free_rows: list[int] = []

    # --- per-branch visible history, for the repetition penalty ---
    def new_row(self, source_row: int | None = None, tokens=None) -> int:
        if self.presence is None:
            return -1
        if self.free_rows:
            row = self.free_rows.pop()
        else:
            row = self.presence.shape[0]
            grown = torch.zeros(max(8, 2 * row), self.vocab_size, dtype=torch.bool, device=self.device)
            grown[:row] = self.presence
            self.free_rows = list(range(grown.shape[0] - 1, row, -1))
            self.presence = grown
        self.presence[row] = self.presence[source_row] if source_row is not None else False
        if tokens is not None and len(tokens):
            self.presence[row, torch.as_tensor(tokens, device=self.device)] = True
        return row

    def observe(self, rows: list[int], tokens: torch.Tensor):
        if self.presence is not None and rows:
            self.presence[torch.tensor(rows, device=self.device), tokens] = True

    def absorb(self, row: int, child_rows: list[int]):
        """At a merge the conclusion sees every path, so their tokens join its history."""
        if self.presence is not None:
            self.presence[row] |= self.presence[torch.tensor(child_rows, device=self.device)].any(0)

    def process(self, scores: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """The scores tokens are drawn from (HF's ``scores``): repetition penalty, then the warpers."""
        scores = scores.float()
        if self.penalty is not None:
            seen = self.presence[torch.tensor(rows, device=scores.device)]
            penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
            scores = torch.where(seen, penalized, scores)
        return self.warpers(None, scores) if len(self.warpers) else scores

    def choose(self, scores: torch.Tensor, prompts: list[int]) -> torch.Tensor:
        """One token per row of processed ``scores``; ``prompts`` gives each row's output row (its generator)."""
        if not self.do_sample:
            return scores.argmax(-1)
        probs = torch.softmax(scores, dim=-1)
        if self.generators is None:
            return torch.multinomial(probs, 1).squeeze(1)
        out = torch.empty(len(prompts), dtype=torch.long, device=scores.device)
        prompt_index = torch.tensor(prompts)
        for b in sorted(set(prompts)):
            sel = (prompt_index == b).nonzero().flatten().to(scores.device)
            out[sel] = torch.multinomial(probs[sel], 1, generator=self.generators[b]).squeeze(1)
        return out


def visible_ids(histories: list[list[int]], pad_id: int, device) -> torch.LongTensor:
    """[R, L] ids, left-padded with ``pad_id`` as HF pads a batch: what each branch row can see, for processors
    and stopping criteria that read ``input_ids``."""
    width = max(1, max(len(h) for h in histories))
    ids = torch.full((len(histories), width), pad_id, dtype=torch.long)
    for r, history in enumerate(histories):
        if history:
            ids[r, width - len(history):] = torch.tensor(history, dtype=torch.long)
    return ids.to(device)


def forced_rows(tokens: list[int], vocab_size: int, device) -> torch.FloatTensor:
    """Scores of tokens emitted without a choice (seeds, replays, padding): only the token is possible, as HF
    reports forced tokens (``structure_processor._force``)."""
    rows = torch.full((len(tokens), vocab_size), float("-inf"), device=device)
    rows[torch.arange(len(tokens), device=device), torch.tensor(tokens, device=device)] = 0.0
    return rows
