import pytest
import torch

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
