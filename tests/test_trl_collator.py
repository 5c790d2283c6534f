"""The training collator and the chunked loss, against answer keys built without the parser."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from multiverse.model_shapes import shape_config
from multiverse.modeling_multiverse import MultiverseForCausalLM
from multiverse.trl_recipes import MultiverseDataCollator, add_chunked_lm_head, chunked_causal_lm_loss
from structures import END_PATH, PATH, TAG_IDS, build, reference_mask, stream

PAD = 0


def nested_example():
    """A block whose second path holds a nested block, then text: every kind of segment."""
    inner = [("text", [30, 31]), ("block", [[("text", [40])], [("text", [41, 42])]], [43]), ("text", [32])]
    return build([("text", [21, 22]), ("block", [[("text", [33, 34, 35])], inner, [("text", [36])]], [37, 38]),
                  ("text", [39])])


def dense_from_batch(batch, b: int) -> torch.Tensor:
    """Every (q, k) at once: causal, key not padding, and the segments' visibility read from their order
    (two ranks per segment: visible iff both ranks order the pair the same way)."""
    seg, order = batch["mv_segment_ids"][b].long(), batch["mv_visibility"][b]
    keep = batch["attention_mask"][b].bool()
    n = seg.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    ranks = order[seg]  # [L, 2]
    before = ranks[:, None, :] <= ranks[None, :, :]  # [q, k, order]
    return causal & keep[None, :] & (before[..., 0] == before[..., 1])


def test_batch_is_padded_with_completion_only_labels():
    long, short = nested_example(), build([("text", [25, 26, 27])])
    prompt = 3
    examples = [{"input_ids": long.ids, "labels": [-100] * prompt + long.ids[prompt:]},
                {"input_ids": torch.tensor(short.ids), "prompt": "ignored extra column",
                 "completion_mask": [0] * prompt + [1] * (len(short.ids) - prompt)}]
    batch = MultiverseDataCollator(TAG_IDS, PAD)(examples)
    n_long, n_short = len(long.ids), len(short.ids)
    assert batch["input_ids"].shape == (2, n_long)
    assert batch["input_ids"][1, n_short:].eq(PAD).all()
    assert batch["attention_mask"].sum(1).tolist() == [n_long, n_short]
    assert batch["labels"][0, :prompt].eq(-100).all() and batch["labels"][0, prompt:].tolist() == long.ids[prompt:]
    assert batch["labels"][1, :prompt].eq(-100).all() and batch["labels"][1, n_short:].eq(-100).all()
    assert batch["labels"][1, prompt:n_short].tolist() == short.ids[prompt:]
    assert batch["position_ids"][0].tolist() == long.positions
    assert batch["position_ids"][1, :n_short].tolist() == short.positions
    assert batch["mv_segment_ids"][1, n_short:].eq(0).all()  # padding sits in the void segment
    # Compact: nothing in the batch grows with L x L.
    assert all(t.numel() < n_long * n_long for t in batch.values())
    assert batch["mv_visibility"].shape[1] < 10 and batch["mv_visibility"].shape[2] == 2  # linear in segments
    for b, built in enumerate((long, short)):
        n = len(built.ids)
        dense = dense_from_batch(batch, b)
        assert torch.equal(dense[:n, :n], torch.tensor(reference_mask(built.addresses)))
        assert not dense[:n, n:].any()


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 3).flatmap(lambda d: stream(0, d)), min_size=2, max_size=3))
def test_batches_of_random_structures_match_the_answer_key(items):
    builts = [build(x) for x in items]
    batch = MultiverseDataCollator(TAG_IDS, PAD, pad_to_multiple_of=8)([{"input_ids": b.ids} for b in builts])
    assert batch["input_ids"].shape[1] % 8 == 0
    for b, built in enumerate(builts):
        n = len(built.ids)
        assert batch["position_ids"][b, :n].tolist() == built.positions
        assert torch.equal(dense_from_batch(batch, b)[:n, :n], torch.tensor(reference_mask(built.addresses)))


def test_truncation_keeps_every_column_aligned():
    built = nested_example()
    labels = [-100] * 2 + built.ids[2:]
    full = MultiverseDataCollator(TAG_IDS, PAD)([{"input_ids": built.ids, "labels": labels}])
    for cut in range(1, len(built.ids) + 1):
        batch = MultiverseDataCollator(TAG_IDS, PAD, max_length=cut)([{"input_ids": built.ids, "labels": labels}])
        assert all(t.shape[1] == cut for k, t in batch.items() if k != "mv_visibility")
        assert batch["input_ids"][0].tolist() == built.ids[:cut]
        assert batch["labels"][0].tolist() == labels[:cut]
        # The layout of a prefix is the prefix of the layout: segments, positions and the mask agree.
        assert torch.equal(batch["mv_segment_ids"], full["mv_segment_ids"][:, :cut])
        assert batch["position_ids"][0].tolist() == built.positions[:cut]
        expected = torch.tensor(reference_mask(built.addresses[:cut])).reshape(cut, cut)
        assert torch.equal(dense_from_batch(batch, 0), expected)


def tiny_model():
    config = shape_config("tiny", TAG_IDS, vocab_size=128)
    torch.manual_seed(0)
    return MultiverseForCausalLM(config).train()


def test_sequence_truncated_mid_structure_still_trains():
    built = nested_example()
    cut = built.ids.index(END_PATH) - 1  # inside the first path: its block never closes
    assert built.ids[:cut].count(PATH) > built.ids[:cut].count(END_PATH)
    batch = MultiverseDataCollator(TAG_IDS, PAD, max_length=cut)([{"input_ids": built.ids}])
    model = add_chunked_lm_head(tiny_model(), chunk_tokens=4)
    labels = batch.pop("labels")
    loss = model(**batch, chunked_ce_labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad, message", [
    ([{"labels": [1, 2]}], "no input_ids"),
    ([{"input_ids": []}], "no tokens"),
    ([{"input_ids": [1, 2, 3], "labels": [1, 2]}], "2 labels for 3"),
    ([{"input_ids": [1, 2], "completion_mask": [1]}], "completion_mask has 1"),
    ([{"input_ids": [[1, 2]]}], "one sequence"),
    ([{"input_ids": torch.ones(2, 2, dtype=torch.long)}], "one sequence"),
    ([{"input_ids": [1.5, 2.0]}], "must be integers"),
    ([{"input_ids": "text"}], "got a string"),
    ([], "empty batch"),
])
def test_bad_examples_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        MultiverseDataCollator(TAG_IDS, PAD)(bad)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="12 distinct tag ids"):
        MultiverseDataCollator(TAG_IDS[:11], PAD)
    with pytest.raises(ValueError, match="max_length=0"):
        MultiverseDataCollator(TAG_IDS, PAD, max_length=0)


def reference_loss(hidden, weight, labels):
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_chunked_loss_equals_full_cross_entropy(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 13, 16, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (2, 13))
    labels[0, :4] = -100
    labels[1, 9:] = -100
    ours = chunked_causal_lm_loss(hidden, head, labels, chunk_tokens=chunk)
    grads = torch.autograd.grad(ours, (hidden, head.weight))
    ref = reference_loss(hidden, head.weight, labels)
    ref_grads = torch.autograd.grad(ref, (hidden, head.weight))
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    n = int((labels[:, 1:] != -100).sum())
    scaled = chunked_causal_lm_loss(hidden, head, labels, num_items_in_batch=2 * n, chunk_tokens=chunk)
    torch.testing.assert_close(scaled, ref / 2)


def test_chunked_loss_without_labels_is_zero_and_differentiable():
    hidden = torch.randn(1, 5, 8, requires_grad=True)
    loss = chunked_causal_lm_loss(hidden, torch.nn.Linear(8, 11, bias=False), torch.full((1, 5), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad is not None


def test_chunked_head_matches_the_models_own_loss():
    built = nested_example()
    batch = MultiverseDataCollator(TAG_IDS, PAD)([{"input_ids": built.ids}])
    model = tiny_model()
    labels = batch.pop("labels")
    with torch.no_grad():
        own = model(**batch, labels=labels).loss
        add_chunked_lm_head(model, chunk_tokens=5)
        chunked = model(**batch, chunked_ce_labels=labels).loss
        plain = model(**batch, labels=labels).loss  # without the keyword the original forward runs
    torch.testing.assert_close(chunked, own)
    torch.testing.assert_close(plain, own)
    with pytest.raises(ValueError, match="chunked_ce_labels only"):
        model(**batch, labels=labels, chunked_ce_labels=labels)
