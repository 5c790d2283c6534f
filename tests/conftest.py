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
