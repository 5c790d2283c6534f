"""Sample texts and results shared by several test modules (test modules never import each other)."""


TEXT = (
    "Let's think in parallel.\n<Parallel>\n<Goal>\n<Outline>\n1: the first sum\n</Outline>\n"
    "<Outline>\n2: the second sum\n</Outline>\n<Outline>\n3: the third sum\n</Outline>\n</Goal>\n"
    "<Path>\n1: 12 + 3 = 15\n</Path>\n<Path>\n2: 4 + 5 = 9, so\n</Path>\n<Path>\n3: 7 + 7 = 14\n</Path>\n"
    "<Conclusion>\n15, 9 and 14.\n</Conclusion>\n</Parallel>\nSo the answer is 38."
)
NESTED = (
    "Plan.\n<Parallel>\n<Goal>\n<Outline>\n1: outer a\n</Outline>\n<Outline>\n2: outer b\n</Outline>\n</Goal>\n"
    "<Path>\n1: start a\n<Parallel>\n<Goal>\n<Outline>\n1.1: inner x\n</Outline>\n<Outline>\n1.2: inner y\n"
    "</Outline>\n</Goal>\n<Path>\n1.1: x is 3\n</Path>\n<Path>\n1.2: y is 4 and more\n</Path>\n<Conclusion>\n"
    "x+y=7\n</Conclusion>\n</Parallel>\nso a is 7\n</Path>\n<Path>\n2: b is 5\n</Path>\n<Conclusion>\n12\n"
    "</Conclusion>\n</Parallel>\nDone: 12."
)

RESULTS = {"benchmark": "toy-sums", "settings": {"benchmark_file": "data/toy-sums.jsonl"}, "summary": [
    dict(mode="parallel", max_new_tokens=256, problems=200, correct=183, accuracy=0.915, mean_tokens=61.2,
         mean_steps=24.5, parallelism=2.498, forks=1.0, seconds=30.0),
    dict(mode="autoregressive", max_new_tokens=256, problems=200, correct=181, accuracy=0.905, mean_tokens=60.0,
         mean_steps=60.0, parallelism=1.0, forks=0.0, seconds=70.0)]}
COMPLETION = ("<Think>\nFirst the setup.\n<Parallel>\n<Goal>\n<Outline>\n1: Area\n</Outline>\n<Outline>\n2: Perimeter\n"
              "</Outline>\n</Goal>\n<Path>\n1: The area is 6.\n</Path>\n<Path>\n2: The perimeter is 12.\n</Path>\n"
              "<Conclusion>\nBoth are known.\n</Conclusion>\n</Parallel>\nSo the ratio is 2.\n</Think>\nAnswer: 2")


def encode_pair(tokenizer, completion):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Add the numbers."}],
                                           add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(prompt), tokenizer.encode(completion)


def corpus_sets(sample_minimums: dict, full_minimums: dict) -> list:
    """Parameters for a corpus-wide test: the vendored sample always, the whole corpus when $MULTIVERSE_CORPUS
    is set. Each parameter is (files, minimums), where minimums are the counts the test expects at least."""
    import pytest

    from multiverse.testing import CORPUS_ENV, corpus_files, full_corpus_files

    full = full_corpus_files()
    return [pytest.param(corpus_files(), sample_minimums, id="sample"),
            pytest.param(full, full_minimums, id="full",
                         marks=[pytest.mark.corpus,
                                pytest.mark.skipif(not full, reason=f"set {CORPUS_ENV} to the corpus folder")])]
