import pytest
import torch

# Tiny models: one thread is faster than two (thread hand-offs cost more than the work), and CI's two
# cores stay free for the subprocesses some tests start.
torch.set_num_threads(1)

from multiverse.model_shapes import random_model
from multiverse.testing import corpus_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return corpus_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return random_model("tiny", tokenizer, attn_implementation="sdpa")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5-Instruct tokenizer, tags added as special tokens as the reference adds them."""
    from multiverse.testing import qwen25_tokenizer

    return qwen25_tokenizer()


@pytest.fixture(scope="session")
def plain_checkpoint(tmp_path_factory, qwen_tokenizer):
    """A tiny random checkpoint laid out as Multiverse4FM/Multiverse-32B: plain qwen2, no auto_map."""
    from multiverse.testing import plain_qwen2_checkpoint

    return plain_qwen2_checkpoint(tmp_path_factory.mktemp("plain-qwen2") / "model", qwen_tokenizer)
