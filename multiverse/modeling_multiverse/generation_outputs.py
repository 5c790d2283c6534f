"""What parallel ``generate`` returns: HF's output fields, plus the Multiverse tree and statistics.

Completions are linearized in the training layout (paths one after the other), so each row reads like a
training example. HF's per-token fields follow that order: ``scores[i][r]`` and ``logits[i][r]`` belong to
completion token ``i`` of output row ``r``.
"""

from dataclasses import dataclass

import torch
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .row_tree import RowTree
from .sampling import forced_rows


@dataclass
class MultiverseGenerateOutput(GenerateDecoderOnlyOutput):
    """HF's decoder-only output (``sequences``, ``scores``, ``logits``; ``attentions`` and ``hidden_states``
    are refused in parallel mode, and the engine's cache is not returned), plus:

    ``multiverse``: per output row, the tree and the statistics (``summarize``).
    ``position_logits``: per output row (with ``output_logits=True``), the logits computed *at* every completion
    token written to the cache, in the same order, None where a token was never fed back. These equal teacher
    forcing of the returned sequence (``model(sequences).logits`` at the completion); HF's ``logits`` are the
    ones each token was *chosen from*, which for a path's first token come from its parent's ``</Goal>``.
    """

    multiverse: list = None
    position_logits: list = None


@dataclass
class PromptResult:
    """One output row of a finished prompt, as ``on_prompt_done`` receives it while the batch goes on."""

    row: int  # the output row: prompt-major, prompt * num_return_sequences + sample
    completion: list  # its token ids in the training layout, closing tags of a cut included, no padding
    multiverse: dict  # its tree and statistics, as ``MultiverseGenerateOutput.multiverse[row]``


def prompt_results(states: list) -> list[PromptResult]:
    results = []
    for state in states:
        tokens = state.root.linearize()[0]
        results.append(PromptResult(state.index, tokens, summary_of(state, tokens)))
    return results


def summary_of(state, tokens) -> dict:
    """``summarize``, made once per output row (a prompt's callback and the final output share it)."""
    if state.summary is None:
        state.summary = summarize(state, tokens)
    return state.summary


def build_output(input_ids, samples: list, generation_config, vocab_size: int):
    """``sequences`` [rows, prompt + longest completion], prompt-major like HF's ``num_return_sequences``;
    completions padded with ``pad_token_id``, else the first eos id (as HF pads), else 0."""
    n = len(samples) // input_ids.shape[0]
    completions = [state.root.linearize() for state in samples]
    width = max(len(c[0]) for c in completions)
    pad = pad_id(generation_config)
    tail = torch.full((len(samples), width), pad, dtype=input_ids.dtype)
    for r, (tokens, _, _) in enumerate(completions):
        tail[r, :len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
    sequences = torch.cat([input_ids.repeat_interleave(n, dim=0), tail.to(input_ids.device)], dim=1)
    if not generation_config.return_dict_in_generate:
        return sequences
    summaries = [summary_of(state, c[0]) for state, c in zip(samples, completions)]
    out = MultiverseGenerateOutput(sequences=sequences, multiverse=summaries)
    if generation_config.output_logits:
        out.position_logits = [c[1] for c in completions]
        out.logits = per_token(completions, tail, 0, vocab_size, input_ids.device)
    if generation_config.output_scores:
        out.scores = per_token(completions, tail, 1, vocab_size, input_ids.device)
    return out


def pad_id(generation_config) -> int:
    if generation_config.pad_token_id is not None:
        return generation_config.pad_token_id
    eos = generation_config.eos_token_id
    if eos is not None:
        return eos if isinstance(eos, int) else list(eos)[0]
    return 0


def per_token(completions, tail, which: int, vocab_size: int, device) -> tuple:
    """HF's layout: a tuple over completion tokens of [rows, vocab]. ``which`` 0: raw logits, 1: processed scores.
    A token emitted without that tensor (a forced seed, a closing tag, padding) gets the forced row: only the
    token itself is possible."""
    steps = []
    for i in range(tail.shape[1]):
        rows, missing = [], []
        for r, (_, _, chosen) in enumerate(completions):
            held = chosen[i][which] if i < len(chosen) and chosen[i] is not None else None
            rows.append(None if held is None else held.float().to(device))
            if held is None:
                missing.append(r)
        if missing:
            forced = forced_rows(tail[missing, i].tolist(), vocab_size, device)
            for k, r in enumerate(missing):
                rows[r] = forced[k]
        steps.append(torch.stack(rows))
    return tuple(steps)


def summarize(state, tokens) -> dict:
    """Stats and tree of one output row, from the engine's own records (``row_tree``): nothing is parsed again.
    The completion follows its prompt, which may open a block."""
    tree = RowTree(state)
    index = {id(br): i for i, br in enumerate(state.branches)}
    return {
        "tokens": state.generated,  # decoded tokens; closing tags of a cut come on top (``closing_tags``)
        "closing_tags": len(tokens) - state.generated,
        "steps": state.steps,
        "parallelism": state.generated / state.steps if state.steps else 0.0,
        "forks": state.forks,
        "max_depth": max(br.stream.depth for br in state.branches),
        "events": dict(state.events),
        "repairs": tree.repairs(),
        "seconds": state.seconds,
        "critical_path": tree.steps() - tree.prompt_steps,
        # cache slots holding the prompt or generated tokens: the prompt's row, shared by its samples
        "kv_slots": state.row.length - 1 - state.row.pad,
        "tree": tree.as_dict(),
        "branches": [{"id": i, "parent": index.get(id(br.parent)), "label": br.stream.label or "root",
                      "depth": br.stream.depth, "start_step": br.start_step, "end_step": br.end_step,
                      # closed by its own </Path>; one a budget cut closed with tags is not
                      "tokens": len(br.tokens), "closed": br.stream.closed and not br.closed_by_cut}
                     for i, br in enumerate(state.branches)],
    }


def tree_dict(result) -> dict:
    """Blocks and paths as plain data; spans index the unpadded prompt + completion. Built with a stack, not
    recursion: a prompt may nest hundreds of blocks deep."""
    def block(b):
        return {"start": b.start, "end": b.end, "closed": b.closed, "outlines": [o.label for o in b.outlines],
                "paths": []}
    blocks = [block(b) for b in result.blocks]
    stack = list(zip(result.blocks, blocks))
    while stack:
        b, out = stack.pop()
        for p in b.paths:
            inner = [block(x) for x in p.blocks]
            out["paths"].append({"label": p.label, "start": p.start, "end": p.end, "closed": p.closed,
                                 "blocks": inner})
            stack.extend(zip(p.blocks, inner))
    return {"length": result.length, "critical_path": result.critical_path, "blocks": blocks}
