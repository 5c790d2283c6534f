"""The built-in toy task: modular counters. Deterministic, offline, and small enough to train from scratch.

A problem lists 2 to 4 counters, each a start digit and a step. Every counter adds its step ``steps``
times modulo 10, written as a scratchpad; the answer is the sum of the final digits modulo 10. The
counters are genuinely independent (one path each) and the conclusion really combines them (a running
sum modulo 10 over the paths' results, written the same way)::

    question:  Add each counter's step 3 times, mod 10. Then add the final digits, mod 10.
               1: 6+1
               2: 4+9
    path 1:    1: 6+1=7,7+1=8,8+1=9
    path 2:    2: 4+9=3,3+9=2,2+9=1
    conclusion 0+9=9,9+1=0
    answer:    0

Why this shape. Probes trained a ~1M-parameter MultiverseForCausalLM (4 layers, width 128) from
scratch, 64 problems per step, and scored greedy decoding with the path seeds and ``<Conclusion>``
forced as the engine forces them:
- reversing 3-letter words in parallel, joined in the conclusion: 100% exact after 500 steps, but
  only 1.32 tokens per decode step, because the answer restates everything;
- counting a letter in 6-letter lines (a running count per path, a running sum in the conclusion):
  100% after 1000 steps; with 10-letter lines under 30%: copying long operands is what is hard;
- a bare digit chain per counter (``6+1: 7890...``) stalled at a loss of 1.2 after 180 steps of 16
  problems: each digit needs the step from far back. The scratchpad puts every operand a fixed distance
  back (loss 0.86 and 15% exact after 120 such steps, 3 minutes on 2 CPU cores: see the quickstart).
Paths carry most tokens, so decoding them in parallel pays: with 4 counters of 6 steps the engine
decodes 2.0 tokens per step.

Held-out problems are disjoint from training ones by construction: a problem belongs to the test split
iff a hash of its question says so, whatever the seeds.
"""

import random
import zlib

from .dataset_build import completion_text

TEST_MODULUS = 10  # one problem in ten is held out


def _question(specs, steps: int) -> str:
    head = f"Add each counter's step {steps} times, mod 10. Then add the final digits, mod 10."
    return head + "\n" + "\n".join(f"{i + 1}: {s}+{d}" for i, (s, d) in enumerate(specs))


def is_test_problem(question: str) -> bool:
    return zlib.crc32(question.encode()) % TEST_MODULUS == 0


def _scratchpad(start: int, step: int, steps: int) -> tuple[str, int]:
    """``6+1=7,7+1=8,...``: every token follows from a token a fixed distance back, which tiny models learn
    fast (a bare digit chain needs the step from far back and stalled a ~1M model at loss 1.2)."""
    work, value = [], start
    for _ in range(steps):
        work.append(f"{value}+{step}={(value + step) % 10}")
        value = (value + step) % 10
    return ",".join(work), value


def solve(specs, steps: int) -> dict:
    """Both traces, the plan a curating LLM should produce, and the answer, for ``specs`` [(start, step)]."""
    chains, finals = zip(*(_scratchpad(s, d, steps) for s, d in specs))
    sums, total = [], 0
    for f in finals:  # the conclusion's running sum, written the same way
        sums.append(f"{total}+{f}={(total + f) % 10}")
        total = (total + f) % 10
    work = [f"{i + 1}: {c}" for i, c in enumerate(chains)]
    conclusion = ",".join(sums)
    multiverse = "\n".join(
        ["<Parallel>", "<Goal>"]
        + [f"<Outline>\n{i + 1}: {s}+{d}\n</Outline>" for i, (s, d) in enumerate(specs)]
        + ["</Goal>"]
        + [f"<Path>\n{line}\n</Path>" for line in work]
        + ["<Conclusion>", conclusion, "</Conclusion>", "</Parallel>"])
    n = len(specs)
    plan = {"steps": [{"id": i + 1, "summary": f"run counter {i + 1} from {s} adding {d}", "depends_on": []}
                      for i, (s, d) in enumerate(specs)]
            + [{"id": n + 1, "summary": "add the final digits modulo 10", "depends_on": list(range(1, n + 1))}],
            "blocks": [{"steps": list(range(1, n + 1)), "combine": "add the counters' final digits modulo 10"}]}
    return {"question": _question(specs, steps), "sequential_trace": "\n".join(work + [conclusion]),
            "multiverse_trace": multiverse, "answer": str(total), "paths": n, "plan": plan}


def make_examples(n: int, seed: int = 0, *, split: str = "train", steps: int = 16, min_paths: int = 2,
                  max_paths: int = 4) -> list[dict]:
    """``n`` distinct problems of ``split`` ("train" or "test"), each a dict with question,
    sequential_trace, multiverse_trace, answer, paths and plan. Same arguments, same list."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    if not 2 <= min_paths <= max_paths <= 9:
        raise ValueError(f"need 2 <= min_paths ({min_paths}) <= max_paths ({max_paths}) <= 9")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    space = sum(90 ** k for k in range(min_paths, max_paths + 1))
    share = space // TEST_MODULUS if split == "test" else space - space // TEST_MODULUS
    if n > share // 2:
        raise ValueError(f"n={n} is more than half of the ~{share} distinct {split} problems with "
                         f"{min_paths}..{max_paths} counters; allow more counters")
    rng = random.Random(f"{seed}:{split}")
    seen, out = set(), []
    while len(out) < n:
        k = rng.randint(min_paths, max_paths)
        specs = tuple((rng.randint(0, 9), rng.randint(1, 9)) for _ in range(k))
        question = _question(specs, steps)
        if specs in seen or is_test_problem(question) != (split == "test"):
            continue
        seen.add(specs)
        out.append(solve(specs, steps))
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
