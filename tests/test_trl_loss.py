"""The chunked loss on batches without label tokens: a finite zero with a zero gradient, as TRL's own loss."""

import argparse
import importlib.util
import math
import os

import pytest
import torch

from multiverse.trl_recipes.loss import chunked_causal_lm_loss


@pytest.mark.parametrize("num_items_in_batch", [None, 0, torch.tensor(0)])
def test_no_label_tokens_give_a_finite_zero_and_a_zero_gradient(num_items_in_batch):
    # Trainer counts label tokens over the whole accumulation window: 0 when every label was cut off.
    hidden = torch.randn(2, 6, 8)
    hidden[0, 2] = float("inf")  # a blown-up state on an ignored position must not poison the loss
    hidden.requires_grad_(True)
    head = torch.nn.Linear(8, 11, bias=False)
    loss = chunked_causal_lm_loss(hidden, head, torch.full((2, 6), -100), num_items_in_batch, chunk_tokens=4)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == 0.0
    assert hidden.grad is not None and torch.equal(hidden.grad, torch.zeros_like(hidden))


def test_a_labelled_batch_still_averages_over_its_tokens():
    torch.manual_seed(0)
    hidden, head = torch.randn(1, 5, 8), torch.nn.Linear(8, 11, bias=False)
    labels = torch.tensor([[-100, 3, 4, -100, 7]])
    expected = torch.nn.functional.cross_entropy(head(hidden[0, :-1]), torch.tensor([3, 4, -100, 7]))
    torch.testing.assert_close(chunked_causal_lm_loss(hidden, head, labels, chunk_tokens=2), expected)
    torch.testing.assert_close(chunked_causal_lm_loss(hidden, head, labels, 6, chunk_tokens=2), expected * 3 / 6)


def test_loss_benchmark_runs_every_variant_and_they_agree():
    spec = importlib.util.spec_from_file_location(
        "loss_benchmark", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "loss.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(device="cpu", dtype="float32", lengths=[96], vocab=500, hidden=64, chunk_tokens=32,
                              label_fraction=0.75, warmup=0)
    rows = [bench.one_step(args, variant, 96) for variant in bench.VARIANTS]
    assert [r["variant"] for r in rows] == ["trl", "chunked", "full"]
    assert all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in rows)
    assert rows[0]["loss"] == pytest.approx(rows[2]["loss"], abs=1e-4)
    assert rows[1]["loss"] == pytest.approx(rows[2]["loss"], abs=1e-4)
