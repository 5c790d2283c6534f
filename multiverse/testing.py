"""Fixtures shared by tests and benchmarks: a tokenizer trained on the real corpus, in seconds."""

import functools
import glob
import os

from .tokenization import train_tokenizer
from .transcripts import read_transcript

CORPUS_DIR = os.environ.get("MULTIVERSE_CORPUS", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                              "corpus", "multiverse32b-aime24"))


def corpus_files() -> list[str]:
    files = glob.glob(os.path.join(CORPUS_DIR, "entry_*.txt"))
    return sorted(files, key=lambda f: int(os.path.basename(f)[6:-4]))


@functools.lru_cache(maxsize=None)
def corpus_tokenizer(vocab_size: int = 1024, chars_per_file: int = 6000):
    """A Qwen2-style BPE tokenizer with the 12 tags, trained on the start of every corpus file."""
    texts = []
    for path in corpus_files():
        t = read_transcript(path)
        texts.append((t.prompt + t.completion)[:chars_per_file])
    if not texts:
        raise FileNotFoundError(f"no corpus files under {CORPUS_DIR}; set MULTIVERSE_CORPUS")
    return train_tokenizer(texts, vocab_size)
