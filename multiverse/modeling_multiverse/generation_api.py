"""``MultiverseForCausalLM.generate``: parallel by default, HF conventions on the outside.

Multiverse options are generation kwargs (or attributes of a ``GenerationConfig``):
``multiverse_parallel`` (True; False decodes autoregressively with the same mask), ``cuda_graphs``
(False; True replays decode steps from CUDA graphs, see ``decode_graphs``), ``max_branches``,
``max_depth``, ``max_path_tokens``, ``max_critical_path``, ``enforce_structure``, ``seed`` (one
generator per prompt), ``tokenizer`` (to seed paths), and ``forced_completions`` (replay given token
ids through the engine, for parity tests and benchmarks).
"""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .branches import Seeds
from .engine import ParallelEngine
from .parser import parse
from .structure_processor import MultiverseStructureLogitsProcessor

OPTION_DEFAULTS = dict(multiverse_parallel=True, cuda_graphs=False, max_branches=16, max_depth=4,
                       max_path_tokens=None, max_critical_path=None, enforce_structure=True, seed=None, tokenizer=None,
                       forced_completions=None)


@dataclass
class MultiverseGenerateOutput(ModelOutput):
    """``sequences``: prompt + completion in the training layout (decodes to a training example's text).
    ``multiverse``: per prompt, the tree and the statistics. ``logits``: per prompt, the logits of every
    completion token written to the cache, in the same order (None where a token was never fed back).
    """

    sequences: torch.LongTensor = None
    multiverse: list = None
    logits: list = None


def split_options(generation_config, kwargs: dict) -> dict:
    """Pop Multiverse options from ``kwargs``, falling back to ``generation_config`` attributes."""
    return {k: kwargs.pop(k) if k in kwargs else getattr(generation_config, k, default)
            for k, default in OPTION_DEFAULTS.items()}


def structure_processor(config, generation_config, options, seeds=None) -> MultiverseStructureLogitsProcessor:
    return MultiverseStructureLogitsProcessor(
        config.multiverse_tag_ids, max_branches=options["max_branches"], max_depth=options["max_depth"],
        max_path_tokens=options["max_path_tokens"], eos_token_id=generation_config.eos_token_id,
        grammar=options["enforce_structure"], seeds=seeds)


def autoregressive_seeds(config, options) -> Seeds | None:
    """The engine's seeds for autoregressive decoding, where they can be built (a tokenizer or the char table)."""
    char_ids = getattr(config, "multiverse_seed_token_ids", None)
    return Seeds(options["tokenizer"], char_ids) if options["tokenizer"] is not None or char_ids else None


def parallel_generate(model, input_ids, attention_mask, generation_config, options, streamer=None):
    if getattr(model.model, "has_sliding_layers", False):
        raise NotImplementedError("parallel generate does not support sliding-window layers")
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("parallel generate needs `input_ids` of shape [batch, prompt_length]")
    forced = options["forced_completions"]
    if forced is not None and len(forced) != input_ids.shape[0]:
        raise ValueError(f"forced_completions has {len(forced)} entries for a batch of {input_ids.shape[0]}")
    processor = structure_processor(model.config, generation_config, options)
    seeds = None if forced is not None else Seeds(options["tokenizer"], model.config.multiverse_seed_token_ids)
    if streamer is not None and not hasattr(streamer, "on_token"):
        if input_ids.shape[0] != 1:
            raise ValueError("a TextStreamer-style streamer works with batch size 1; use a branch streamer")
        streamer.put(input_ids.cpu())
        streamer = LinearStreamer(streamer)
    engine = ParallelEngine(model, generation_config, processor, seeds,
                            dict(options, streamer=streamer, output_logits=bool(generation_config.output_logits)))
    prompts = engine.run(input_ids, attention_mask, forced)
    completions, logits, summaries = [], [], []
    for state in prompts:
        tokens, token_logits = state.root.linearize()
        completions.append(tokens)
        logits.append(token_logits)
        summaries.append(summarize(state, tokens, model.config.multiverse_tag_ids))
    width = max(len(c) for c in completions)
    pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
    tail = torch.full((len(completions), width), pad, dtype=input_ids.dtype)
    for b, tokens in enumerate(completions):
        tail[b, :len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
    sequences = torch.cat([input_ids, tail.to(input_ids.device)], dim=1)
    if not generation_config.return_dict_in_generate:
        return sequences
    return MultiverseGenerateOutput(sequences=sequences, multiverse=summaries,
                                    logits=logits if generation_config.output_logits else None)


def summarize(state, tokens, tag_ids) -> dict:
    """Stats and tree of one prompt. The completion is read after its prompt, which may open a block."""
    prompt = state.prompt_ids
    result = parse(prompt + tokens, tag_ids)
    prompt_critical = parse(prompt, tag_ids, allow_truncated=True).critical_path
    index = {id(br): i for i, br in enumerate(state.branches)}
    return {
        "tokens": state.generated,
        "steps": state.steps,
        "parallelism": state.generated / state.steps if state.steps else 0.0,
        "forks": state.forks,
        "max_depth": max(br.stream.depth for br in state.branches),
        "events": dict(state.events),
        "repairs": [str(r) for r in result.repairs if r.index >= len(prompt)],
        "seconds": state.seconds,
        "critical_path": result.critical_path - prompt_critical,
        "kv_slots": state.length - 1 - state.pad,  # cache slots holding prompt or generated tokens
        "tree": tree_dict(result),
        "branches": [{"id": i, "parent": index.get(id(br.parent)), "label": br.stream.label or "root",
                      "depth": br.stream.depth, "start_step": br.start_step, "end_step": br.end_step,
                      "tokens": len(br.tokens), "closed": br.stream.closed} for i, br in enumerate(state.branches)],
    }


def tree_dict(result) -> dict:
    """Blocks and paths as plain data; spans index the unpadded prompt + completion."""
    def block(b):
        return {"start": b.start, "end": b.end, "closed": b.closed, "outlines": [o.label for o in b.outlines],
                "paths": [{"label": p.label, "start": p.start, "end": p.end, "closed": p.closed,
                           "blocks": [block(x) for x in p.blocks]} for p in b.paths]}
    return {"length": result.length, "critical_path": result.critical_path, "blocks": [block(b) for b in result.blocks]}


class LinearStreamer:
    """Feeds a TextStreamer-style streamer (``put``/``end``) the completion in training order.

    Paths decode together, but the text shows path 1 live and each later path as soon as the one
    before it has closed, so the printed text is exactly the decoded sequence.
    """

    def __init__(self, streamer):
        self.streamer = streamer
        self.stack = None  # [branch, next token, next fork, next child]

    def on_token(self, branch, token):
        if self.stack is None:
            root = branch
            while root.parent is not None:
                root = root.parent
            self.stack = [[root, 0, 0, 0]]
        self.flush()

    def on_fork(self, parent, children):
        pass

    def on_merge(self, parent, children):
        self.flush()

    def flush(self):
        out = []
        while self.stack:
            frame = self.stack[-1]
            br, i, f, c = frame
            cut = br.forks[f][0] if f < len(br.forks) else len(br.tokens)
            if i < cut:
                out += br.tokens[i:cut]
                frame[1] = cut
                continue
            if f < len(br.forks):
                children = br.forks[f][1]
                if c < len(children):
                    self.stack.append([children[c], 0, 0, 0])
                    continue
                frame[2], frame[3] = f + 1, 0
                continue
            if not br.done:
                break
            self.stack.pop()
            if self.stack:
                self.stack[-1][3] += 1
        if out:
            self.streamer.put(torch.tensor(out))

    def end(self):
        self.flush()
        self.streamer.end()
