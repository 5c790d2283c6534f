"""The built-in toy task: dials. Deterministic, offline, and small enough to train from scratch.

A problem has 2 to 4 dials. Dial k has its own ring of ten symbols (dial 1 ``a..j``, dial 2 ``k..t``,
dial 3 ``A..J``, dial 4 ``K..T``) and a start symbol; every dial turns the same number of steps,
wrapping round its ring. The answer is how many dials end in the back half of their ring (the last
five symbols). The dials are genuinely independent (one path each, turning one dial), and the
conclusion really combines them (it counts over the paths' end symbols)::

    question:  Turn each dial 5 steps. How many end in the back half?
               1: c
               2: s
    path 1:    1: c d e f g h
    path 2:    2: s t k l m n
    conclusion back half: 1
    answer:    1

Why this shape. A path must find its own start in the question, and every path sits at the same
positions (the layout's rule), so only its label tells it which start is its own. Probes on 2 CPU cores
(a ~250K-parameter MultiverseForCausalLM, width 64, 3 layers, rope theta 1e4, batch 24, lr 1e-2, greedy
parallel decoding of 100 held-out problems) measured how fast each shape of lookup is learned:
- modular counters (``5+2=7,7+2=9,...``, sum of the ends mod 10): the mod-10 sums stayed at chance after
  300 steps, and so did copying each counter's operands by label. 11% exact in the 10-minute quickstart;
- counting up digits from a start and a count (``68 77 86 ...``): later path tokens >= 97% right, but a
  path found its own start by its label in 20-50% of cases after 300-500 steps (it needs an induction
  circuit: the key must know its label, two tokens back). 29.5-30% exact in the quickstart;
- dials: a ring symbol says by itself which dial it belongs to, so the lookup is one match of the path's
  label against the ring of each symbol in the question. After 600 steps (245 s) 73% of path starts and
  60% of answers were right, after 250 steps 16%: the lookup forms in that window.
Every later path symbol is the ring successor of the one before it (a bigram), so paths carry most tokens
cheaply: with 4 dials of 17 steps the engine decodes ~2.1 tokens per step.

Held-out problems are disjoint from training ones by construction: a problem belongs to the test split
iff a hash of its question says so, whatever the seeds.
"""

import random
import zlib

from .dataset_build import completion_text

TEST_MODULUS = 10  # one problem in ten is held out
RINGS = ("abcdefghij", "klmnopqrst", "ABCDEFGHIJ", "KLMNOPQRST")


def _question(starts, steps: int) -> str:
    head = f"Turn each dial {steps} steps. How many end in the back half?"
    return head + "\n" + "\n".join(f"{k + 1}: {RINGS[k][s]}" for k, s in enumerate(starts))


def is_test_problem(question: str) -> bool:
    return zlib.crc32(question.encode()) % TEST_MODULUS == 0


def _turn(ring: str, start: int, steps: int) -> tuple[str, int]:
    """``c d e f g h``: the start, then each symbol the ring successor of the one before it."""
    return " ".join(ring[(start + j) % 10] for j in range(steps + 1)), (start + steps) % 10


def solve(starts, steps: int) -> dict:
    """Both traces, the plan a curating LLM should produce, and the answer, for dial ``starts`` (0-9 each)."""
    chains, ends = zip(*(_turn(RINGS[k], s, steps) for k, s in enumerate(starts)))
    back = sum(e >= 5 for e in ends)
    work = [f"{k + 1}: {c}" for k, c in enumerate(chains)]
    conclusion = f"back half: {back}"
    multiverse = "\n".join(
        ["<Parallel>", "<Goal>"]
        + [f"<Outline>\n{k + 1}:\n</Outline>" for k in range(len(starts))]
        + ["</Goal>"]
        + [f"<Path>\n{line}\n</Path>" for line in work]
        + ["<Conclusion>", conclusion, "</Conclusion>", "</Parallel>"])
    n = len(starts)
    plan = {"steps": [{"id": k + 1, "summary": f"turn dial {k + 1} {steps} steps from {RINGS[k][s]}",
                       "depends_on": []} for k, s in enumerate(starts)]
            + [{"id": n + 1, "summary": "count the dials that end in the back half",
                "depends_on": list(range(1, n + 1))}],
            "blocks": [{"steps": list(range(1, n + 1)), "combine": "count the dials that end in the back half"}]}
    return {"question": _question(starts, steps), "sequential_trace": "\n".join(chains + (conclusion,)),
            "multiverse_trace": multiverse, "answer": str(back), "paths": n, "plan": plan}


def make_examples(n: int, seed: int = 0, *, split: str = "train", steps: int = 17, min_paths: int = 2,
                  max_paths: int = 4) -> list[dict]:
    """``n`` distinct problems of ``split`` ("train" or "test"), each a dict with question,
    sequential_trace, multiverse_trace, answer, paths and plan; every dial turns ``steps`` steps.
    Same arguments, same list."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    if not 2 <= min_paths <= max_paths <= len(RINGS):
        raise ValueError(f"need 2 <= min_paths ({min_paths}) <= max_paths ({max_paths}) <= {len(RINGS)} (one ring "
                         "of symbols per dial)")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    space = sum(10 ** k for k in range(min_paths, max_paths + 1))
    share = space // TEST_MODULUS if split == "test" else space - space // TEST_MODULUS
    if n > share // 2:
        raise ValueError(f"n={n} is more than half of the ~{share} distinct {split} problems with "
                         f"{min_paths}..{max_paths} dials; allow more dials")
    rng = random.Random(f"{seed}:{split}")
    seen, out = set(), []
    while len(out) < n:
        starts = tuple(rng.randint(0, 9) for _ in range(rng.randint(min_paths, max_paths)))
        if starts in seen or is_test_problem(_question(starts, steps)) != (split == "test"):
            continue
        seen.add(starts)
        out.append(solve(starts, steps))
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
