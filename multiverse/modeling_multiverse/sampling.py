"""Turn one step's logits (one row per decoding branch) into tokens, with the usual HF settings.

Temperature, top-k, top-p and min-p are transformers' own warpers. The repetition penalty is applied
over each branch's own *visible* history (prompt, ancestors, itself; not its siblings), kept as one
presence row per branch so it never needs the ids in a padded tensor.
"""

import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
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
            if gc.top_k:
                self.warpers.append(TopKLogitsWarper(gc.top_k))
            if gc.top_p is not None and gc.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(gc.top_p))
            if getattr(gc, "min_p", None):
                self.warpers.append(MinPLogitsWarper(gc.min_p))
        # One generator per prompt: a prompt samples the same tokens alone or in any batch.
        self.generators = None
        if seed is not None:
            self.generators = [torch.Generator(device=device).manual_seed(seed + b) for b in range(batch_size)]
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

    def __call__(self, scores: torch.Tensor, prompts: list[int], rows: list[int]) -> torch.Tensor:
        scores = scores.float()
        if self.penalty is not None:
            seen = self.presence[torch.tensor(rows, device=scores.device)]
            penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
            scores = torch.where(seen, penalized, scores)
        if not self.do_sample:
            return scores.argmax(-1)
        scores = self.warpers(None, scores)
        probs = torch.softmax(scores, dim=-1)
        if self.generators is None:
            return torch.multinomial(probs, 1).squeeze(1)
        out = torch.empty(len(prompts), dtype=torch.long, device=scores.device)
        prompt_index = torch.tensor(prompts)
        for b in sorted(set(prompts)):
            sel = (prompt_index == b).nonzero().flatten().to(scores.device)
            out[sel] = torch.multinomial(probs[sel], 1, generator=self.generators[b]).squeeze(1)
        return out
