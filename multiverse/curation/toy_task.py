"""The built-in toy task: counting up. Deterministic, offline, and small enough to train from scratch.

A problem lists 2 to 4 counters, each a start digit and a count. Every counter counts up from its start
digit, modulo 10, as many times as its count; the answer is how many counters end on an odd digit. The
counters are genuinely independent (one path each) and the conclusion really combines them (it gathers
each path's final digit by its label and counts the odd ones)::

    question:  Count up, mod 10. How many end odd?
               1: 6+8
               2: 1+6
    path 1:    1: 68 77 86 95 04 13 22 31 40 1=4
    path 2:    2: 16 25 34 43 52 61 70 2=7
    conclusion 1=4 2=7 odd 1
    answer:    1

Each pair in a path is the value and the count left; the path stops when the count reaches 0.

Why this shape. Probes (2 CPU cores, ~250K-parameter MultiverseForCausalLM, width 64, 3 layers, rope
theta 1e4, batch 24-32, lr 1e-2, scored with teacher forcing per token kind and with greedy parallel
decoding on 100 held-out problems):
- the former task, modular counters ``5+2=7,7+2=9,...``: after 300 steps the first sum of every
  scratchpad was still at chance (9%): mod-10 addition of two operands is a lookup tiny models learn
  slowly. With rope theta 1e6 even copying the step from four tokens back stayed at chance (11%);
  theta 1e4 learned it;
- counting up instead (every digit is its neighbour three tokens back, +1 or -1) is learned: path tokens
  after the first pair are ~97% right after 350 steps (230 s), and so is the odd count from the
  gathered digits (92%);
- what is not learned in this budget is fetching by label: a path's first pair must be found in the
  question by its label, because all paths sit at the same positions (20-50% per digit with teacher
  forcing after 320-400 steps, chance 10-25%, with 2 or 4 heads; lr 2e-2 diverged), and likewise the
  conclusion's fetch of each path's result. Outlines therefore carry only the label, so that fetch
  happens once. In the full quickstart a path decodes right exactly when its first pair is fetched right:
  7% of paths after 350 steps, 13% after 500; exact match stays near 30%, below the 37.5% of always
  answering 2 (benchmarks/RESULTS.md).
Paths carry most tokens, so decoding them in parallel pays: with 4 counters counting 6 to 9 times the
engine decodes ~2.1 tokens per step.

Held-out problems are disjoint from training ones by construction: a problem belongs to the test split
iff a hash of its question says so, whatever the seeds.
"""

import random
import zlib

from .dataset_build import completion_text

TEST_MODULUS = 10  # one problem in ten is held out
HEAD = "Count up, mod 10. How many end odd?"


def _question(specs) -> str:
    return HEAD + "\n" + "\n".join(f"{i + 1}: {s}+{n}" for i, (s, n) in enumerate(specs))


def is_test_problem(question: str) -> bool:
    return zlib.crc32(question.encode()) % TEST_MODULUS == 0


def _count_up(start: int, count: int) -> tuple[str, int]:
    """``68 77 86 ... 40``: each pair is the value and the count left, so every digit follows from the digit
    three tokens back by +1 or -1 (a lookup tiny models learn fast; mod-10 addition of two operands, even a
    fixed distance back, was still at chance after 300 steps)."""
    return " ".join(f"{(start + j) % 10}{count - j}" for j in range(count + 1)), (start + count) % 10


def solve(specs) -> dict:
    """Both traces, the plan a curating LLM should produce, and the answer, for ``specs`` [(start, count)]."""
    chains, finals = zip(*(_count_up(s, n) for s, n in specs))
    odd = sum(f % 2 for f in finals)
    work = [f"{c} {i + 1}={f}" for i, (c, f) in enumerate(zip(chains, finals))]
    conclusion = " ".join(f"{i + 1}={f}" for i, f in enumerate(finals)) + f" odd {odd}"
    multiverse = "\n".join(
        ["<Parallel>", "<Goal>"]
        + [f"<Outline>\n{i + 1}:\n</Outline>" for i in range(len(specs))]
        + ["</Goal>"]
        + [f"<Path>\n{i + 1}: {line}\n</Path>" for i, line in enumerate(work)]
        + ["<Conclusion>", conclusion, "</Conclusion>", "</Parallel>"])
    n = len(specs)
    plan = {"steps": [{"id": i + 1, "summary": f"count counter {i + 1} up from {s}, {c} times, mod 10",
                       "depends_on": []} for i, (s, c) in enumerate(specs)]
            + [{"id": n + 1, "summary": "count the odd final digits", "depends_on": list(range(1, n + 1))}],
            "blocks": [{"steps": list(range(1, n + 1)), "combine": "count the counters that end on an odd digit"}]}
    return {"question": _question(specs), "sequential_trace": "\n".join(work + [conclusion]),
            "multiverse_trace": multiverse, "answer": str(odd), "paths": n, "plan": plan}


def make_examples(n: int, seed: int = 0, *, split: str = "train", steps: int = 9, min_paths: int = 2,
                  max_paths: int = 4) -> list[dict]:
    """``n`` distinct problems of ``split`` ("train" or "test"), each a dict with question,
    sequential_trace, multiverse_trace, answer, paths and plan. Counters count ``steps - 3`` to ``steps``
    times (at least once). Same arguments, same list."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    if not 2 <= min_paths <= max_paths <= 9:
        raise ValueError(f"need 2 <= min_paths ({min_paths}) <= max_paths ({max_paths}) <= 9")
    if not 1 <= steps <= 9:
        raise ValueError(f"steps={steps}: the count is one digit, so 1 <= steps <= 9")
    counts = range(max(1, steps - 3), steps + 1)
    space = sum((10 * len(counts)) ** k for k in range(min_paths, max_paths + 1))
    share = space // TEST_MODULUS if split == "test" else space - space // TEST_MODULUS
    if n > share // 2:
        raise ValueError(f"n={n} is more than half of the ~{share} distinct {split} problems with "
                         f"{min_paths}..{max_paths} counters; allow more counters")
    rng = random.Random(f"{seed}:{split}")
    seen, out = set(), []
    while len(out) < n:
        k = rng.randint(min_paths, max_paths)
        specs = tuple((rng.randint(0, 9), rng.choice(counts)) for _ in range(k))
        if specs in seen or is_test_problem(_question(specs)) != (split == "test"):
            continue
        seen.add(specs)
        out.append(solve(specs))
    return out


def make_test_problems(n: int, seed: int = 0, **kwargs) -> list[dict]:
    """Held-out problems: never produced by ``make_examples(split="train")``, whatever the seeds."""
    return make_examples(n, seed, split="test", **kwargs)


def extract_answer(completion: str) -> str:
    """The answer a model gave: the text after the last ``</Think>`` (or all of it), stripped."""
    return completion.rsplit("</Think>", 1)[-1].strip()


def exact_match(completion: str, answer: str) -> bool:
    return extract_answer(completion) == answer.strip()


def as_records(examples: list[dict]) -> list[dict]:
    """Examples as finished curation records, so ``dataset_build.build_dataset`` takes them directly."""
    return [{"id": f"toy-{i}", "index": i, "question": e["question"], "answer": e["answer"], "outcome": "ok",
             "multiverse_trace": e["multiverse_trace"]} for i, e in enumerate(examples)]


def as_chat(example: dict) -> list[dict]:
    """The whole example as a conversation, for tokenizer training or quick inspection."""
    return [{"role": "user", "content": example["question"]},
            {"role": "assistant", "content": completion_text(example["multiverse_trace"], example["answer"])}]
