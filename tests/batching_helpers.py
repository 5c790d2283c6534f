"""Prompts, forced completions and per-row results for the continuous-batching and sequential-paths tests."""

from engine_helpers import run_engine
from mock_lm import TableLM
from multiverse.modeling_multiverse import TAGS, tag_token_ids
from samples import TEXT

SHORT = "Just a sentence, no block at all."
TWO_BLOCKS = TEXT + "\n<Parallel>\n<Goal>\n<Outline>\n1: again\n</Outline>\n<Outline>\n2: more\n</Outline>\n</Goal>\n" \
    "<Path>\n1: once\n</Path>\n<Path>\n2: twice over\n</Path>\n<Conclusion>\nok\n</Conclusion>\n</Parallel>\nEnd."


def prompts_and_completions(tokenizer, texts):
    prompts = [tokenizer.encode("Q" + " please" * (3 * i) + ":\n") for i in range(len(texts))]  # lengths differ
    return prompts, [tokenizer.encode(t) for t in texts]


def rows_of(out, prompt_width: int) -> list[dict]:
    """Per output row: its completion (padding dropped) and its statistics (wall time dropped)."""
    rows = []
    for r, stats in enumerate(out.multiverse):
        n = stats["tokens"] + stats["closing_tags"]
        rows.append({"completion": out.sequences[r, prompt_width:prompt_width + n].tolist(),
                     **{k: v for k, v in stats.items() if k != "seconds"}})
    return rows


def run(model, prompts, forced=None, **kwargs):
    out = run_engine(model, prompts, forced=forced, **kwargs)
    return out, rows_of(out, max(len(p) for p in prompts))


def alone(model, prompts, forced=None, n=1, seed=None, **kwargs):
    """Each prompt decoded by itself (its output rows seeded as in the batch: seed + row)."""
    rows = []
    for p, prompt in enumerate(prompts):
        extra = {} if seed is None else {"seed": seed + p * n}
        rows += run(model, [prompt], None if forced is None else [forced[p]], num_return_sequences=n, **extra,
                    **kwargs)[1]
    return rows


def table_model(tokenizer, prefs: dict, default: int | None = None):
    """A TableLM whose row ``a`` prefers ``prefs[a]``, in order (equal weights with ``ties=True``)."""
    model = TableLM(tokenizer, default=default)
    for a, (choices, ties) in prefs.items():
        for rank, b in enumerate(choices):
            model.table[a, b] = 12.0 if ties else 10.0 - rank
    return model


def tag_ids(tokenizer) -> dict:
    return dict(zip(TAGS, tag_token_ids(tokenizer)))
