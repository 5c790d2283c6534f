"""The curation pipeline against a real local HTTP server speaking chat completions, with scripted answers."""

import json
from collections import Counter

import pytest

from multiverse.curation.backends import FatalBackendError, OpenAIBackend, TransformersBackend
from multiverse.curation.checkpoint import Checkpoint
from multiverse.curation.dataset_build import build_dataset
from multiverse.curation.inputs import Item
from multiverse.curation.mock_server import ChatServer, Reply, find_example, task_of, toy_oracle
from multiverse.curation.pipeline import CurateConfig, curate_item
from multiverse.curation.report import summarize
from multiverse.curation.runner import run_curation
from multiverse.curation.schema import plan_json_schema
from multiverse.curation.toy_task import make_examples
from multiverse.curation.validate import validate_trace

EXAMPLES = make_examples(12, seed=7)


def items(examples=EXAMPLES):
    return [Item(f"item{i}", i, e["question"], e["sequential_trace"], e["answer"]) for i, e in enumerate(examples)]


def backend(server, **kw):
    kw = dict(timeout=5.0, retries=2, backoff=0.001, max_backoff=0.01) | kw
    return OpenAIBackend(server.url, "scripted", **kw)


def checkpoint_records(path) -> dict:
    with Checkpoint(path) as ckpt:  # closed at once: it holds the checkpoint's lock while open
        return ckpt.records


def requests_for(server, example):
    return [r for r in server.requests if find_example(r, EXAMPLES) is example]


def test_good_answers_become_valid_examples(tmp_path):
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        report = run_curation(items(), backend(server), CurateConfig(response_format="json_schema"),
                              tmp_path / "ck.jsonl", concurrency=3, progress=False)
    assert report["outcomes"] == {"ok": 12} and report["run"]["ran"] == 12
    records = checkpoint_records(tmp_path / "ck.jsonl")
    for i, e in enumerate(EXAMPLES):
        r = records[f"item{i}"]
        assert r["multiverse_trace"] == e["multiverse_trace"] and validate_trace(r["multiverse_trace"]) == []
        assert r["calls"] == 2 and r["repairs"] == 0 and r["stats"]["paths"] == e["paths"]
        assert r["checks"]["answer_kept"] is True and r["independence"] == []
    # Tokens are the server's usage numbers, summed.
    usage = sum(len(m["content"]) for req in server.requests for m in req["messages"]) // 4
    assert abs(report["tokens"]["prompt"] - usage) <= len(server.requests)
    assert len(server.requests) == 24 and Counter(task_of(r) for r in server.requests) == {"plan": 12, "rewrite": 12}
    for request in server.requests:  # the plan's schema is sent to servers that can enforce it
        fmt = request.get("response_format")
        assert (fmt["json_schema"]["schema"]["title"] == "Plan") if task_of(request) == "plan" else fmt is None


SOURCE = ("A is 3 by 4, so its area is 12. B is 5 by 6, so its area is 30. Together 12 + 30 = 42. "
          "So the answer is 42.")
PLAN = {"steps": [{"id": 1, "summary": "area of A"}, {"id": 2, "summary": "area of B"},
                  {"id": 3, "summary": "add", "depends_on": [1, 2]}],
        "blocks": [{"steps": [1, 2], "combine": "add the areas"}]}
REWRITE = ("<Parallel>\n<Goal>\n<Outline>\n1: area of A\n</Outline>\n<Outline>\n2: area of B\n</Outline>\n"
           "</Goal>\n<Path>\n1: A is 3 by 4, so its area is 12.\n</Path>\n<Path>\n2: B is 5 by 6, so its area "
           "is 30.\n</Path>\n<Conclusion>\nTogether 12 + 30 = 42.\n</Conclusion>\n</Parallel>\nSo the answer is 42.")


@pytest.mark.parametrize("drop_dependent", [False, True])
def test_source_and_independence_problems_go_back_for_repair(drop_dependent):
    dependent = REWRITE.replace("so its area is 30.", "so its area is 30, plus path 1 gives 42.")
    answers = {"plan": [json.dumps(PLAN)], "rewrite": [REWRITE.replace("42", "41")],
               "repair": [dependent, dependent, dependent]}
    with ChatServer(lambda request: Reply(answers[task_of(request)].pop(0))) as server:
        record = curate_item(Item("x", 0, "Total area?", SOURCE, "\\boxed{42}"), backend(server),
                             CurateConfig(max_repairs=2, drop_dependent=drop_dependent))
    assert record["errors"][0]["rule"] == "answer-lost"
    assert "no longer states the final answer" in server.requests[2]["messages"][-1]["content"]
    if drop_dependent:
        assert record["outcome"] == "failed" and record["reason"] == "independence:sibling-reference"
        assert "path 2 of block 1 uses a sibling's result" in server.requests[3]["messages"][-1]["content"]
    else:
        assert record["outcome"] == "ok" and record["repairs"] == 1 and record["multiverse_trace"] == dependent
        assert [(f["path"], f["kind"]) for f in record["independence"]] == [("2", "mention")]
        report = summarize([record])
        assert report["independence"] == {"flagged_items": 1, "flags": 1, "by_kind": {"mention": 1}}


def test_malformed_xml_is_repaired_within_k(tmp_path):
    ex = EXAMPLES
    broken = {
        0: [ex[0]["multiverse_trace"].replace("</Path>\n<Conclusion>", "<Conclusion>", 1)],
        1: [ex[1]["multiverse_trace"].replace("</Goal>", "these are my outlines\n</Goal>"),
            ex[1]["multiverse_trace"].replace("<Outline>\n1:", "<Outline>\n")],
        2: ["<Parallel>\n<Goal>\n</Goal>\n</Parallel>"] * 10,
    }
    plan_garbage = {3: ["I think the plan is fine."]}

    def script(request):
        i = EXAMPLES.index(find_example(request, EXAMPLES))
        task = task_of(request)
        if task in ("plan", "plan-repair"):
            queue = plan_garbage.get(i, [])
            return Reply(queue.pop(0)) if queue else Reply(json.dumps(ex[i]["plan"]))
        queue = broken.get(i, [])
        return Reply(queue.pop(0)) if queue else Reply(ex[i]["multiverse_trace"])

    config = CurateConfig(max_repairs=2)
    with ChatServer(script) as server:
        b = backend(server)
        records = [curate_item(item, b, config) for item in items()[:4]]
    assert [r["outcome"] for r in records] == ["ok", "ok", "failed", "ok"]
    assert [r["repairs"] for r in records] == [1, 2, 2, 0]
    assert [e["rule"] for e in records[1]["errors"]] == ["text-between-tags", "outline-label"]
    assert records[2]["reason"] == "rewrite:empty-goal" and records[2]["calls"] == 1 + 3
    assert records[3]["calls"] == 3 and records[3]["errors"][0]["rule"] == "invalid-json"
    for r, e in zip(records, EXAMPLES):
        if r["outcome"] == "ok":
            assert r["multiverse_trace"] == e["multiverse_trace"]
    # The repair request carries the bad answer and the validator's rule, place and excerpt.
    repair = next(r for r in requests_for(server, EXAMPLES[0]) if task_of(r) == "repair")
    bad = repair["messages"][-2]
    assert bad["role"] == "assistant" and "</Path>\n<Conclusion>" not in bad["content"]
    assert "[stray-tag] line" in repair["messages"][-1]["content"] and ">>>" in repair["messages"][-1]["content"]
    plan_repair = next(r for r in requests_for(server, EXAMPLES[3]) if task_of(r) == "plan-repair")
    assert "no JSON object" in plan_repair["messages"][-1]["content"]


def test_http_errors_timeouts_and_garbage_are_retried_then_recorded(tmp_path):
    oracle = toy_oracle(EXAMPLES)
    flaky = Counter()

    def script(request):
        i = EXAMPLES.index(find_example(request, EXAMPLES))
        if i == 0:  # two 500s, then fine: retried to success
            flaky[i] += 1
            return Reply(status=500) if flaky[i] <= 2 else oracle(request)
        return {
            1: Reply(status=500), 2: Reply(status=503), 3: Reply(status=429, headers={"Retry-After": "0"}),
            4: Reply("late", delay=3.0), 5: Reply(body=b"<html>gateway</html>"),
            6: Reply(body=b'{"object": "chat.completion", "choices": []}'),
            7: Reply("Here is my plan: step one, then step two."), 8: Reply(status=400),
        }.get(i) or oracle(request)

    with ChatServer(script) as server:
        # The timeout bounds each whole request, client time included: on a loaded 2-core machine, ten
        # threads starting requests at once can spend a few tenths of a second before one reaches the server.
        b = backend(server, timeout=1.5)
        report = run_curation(items()[:10], b, CurateConfig(max_repairs=1), tmp_path / "ck.jsonl",
                              concurrency=10, progress=False)
        records = checkpoint_records(tmp_path / "ck.jsonl")
    reasons = {r["index"]: r["reason"] for r in records.values()}
    assert reasons == {0: None, 1: "backend:http-500", 2: "backend:http-503", 3: "backend:rate-limited",
                       4: "backend:timeout", 5: "backend:bad-response", 6: "backend:bad-response",
                       7: "plan:invalid-json", 8: "backend:bad-request", 9: None}
    assert report["failure_reasons"]["backend:bad-response"] == 2 and report["outcomes"] == {"ok": 2, "failed": 8}
    http_attempts = {i: len(requests_for(server, EXAMPLES[i])) for i in range(10)}
    # retries=2: three attempts per call; the 400 is not retried; the chatter is answered, then repaired once.
    assert http_attempts == {0: 4, 1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 3, 7: 2, 8: 1, 9: 2}
    assert "after 3 attempts" in records["item1"]["detail"]
    assert records["item0"]["outcome"] == "ok" and records["item0"]["calls"] == 2


def test_bad_key_stops_the_run_without_recording(tmp_path):
    with ChatServer(lambda request: Reply(status=401)) as server:
        with pytest.raises(FatalBackendError, match="refused the API key"):
            run_curation(items()[:3], backend(server), CurateConfig(), tmp_path / "ck.jsonl", concurrency=1,
                         progress=False)
    assert checkpoint_records(tmp_path / "ck.jsonl") == {}


def test_dataset_from_records_loads_with_chat_fields(tmp_path):
    import datasets

    with ChatServer(toy_oracle(EXAMPLES)) as server:
        run_curation(items(), backend(server), CurateConfig(), tmp_path / "ck.jsonl", concurrency=4, progress=False)
    records = list(checkpoint_records(tmp_path / "ck.jsonl").values())
    build_dataset(records, mix=0.25, seed=1, system="Think in parallel.").save_to_disk(str(tmp_path / "ds"))
    data = datasets.load_from_disk(str(tmp_path / "ds"))
    train, ar = data["train"], data["autoregressive"]
    assert train["format"] == ["autoregressive"] * 3 + ["multiverse"] * 12 and len(ar) == 12
    row = train[3]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    # The reference's training prompts: the question, then the suffix of its format.
    assert row["prompt"][1]["content"] == EXAMPLES[0]["question"] + " Think step by step and in parallel before answering."
    assert ar[0]["prompt"][-1]["content"] == EXAMPLES[0]["question"] + " Think step by step before answering."
    bare = build_dataset(records, prompt_suffixes=False)
    assert bare["train"][0]["prompt"][-1]["content"] == EXAMPLES[0]["question"]
    (turn,) = row["completion"]
    assert turn["role"] == "assistant"
    assert turn["content"] == f"<Think>\n{EXAMPLES[0]['multiverse_trace']}\n</Think>\n{EXAMPLES[0]['answer']}"
    plain = ar[0]["completion"][0]["content"]
    assert "<Path>" not in plain and "<Parallel>" not in plain and plain.startswith("<Think>\n")
    assert plain.endswith(f"</Think>\n{EXAMPLES[0]['answer']}")
    with pytest.raises(ValueError, match="--mix 1.5"):
        build_dataset(records, mix=1.5)
    first = next(k for k, r in enumerate(records) if r["id"] == "item0")
    records[first] = dict(records[first], multiverse_trace=records[first]["multiverse_trace"].replace("</Goal>", ""))
    with pytest.raises(ValueError, match="record item0 .*invalid trace"):
        build_dataset(records)


def test_local_transformers_backend(tmp_path):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from multiverse.tokenization import train_tokenizer

    tok = train_tokenizer([e["question"] + e["multiverse_trace"] for e in EXAMPLES] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    local = TransformersBackend(str(tmp_path / "m"), max_new_tokens=6, device="cpu")
    record = curate_item(items()[0], local, CurateConfig(max_repairs=1))
    # A random model cannot plan: two plan calls, recorded as a plan failure with exact token counts.
    assert record["outcome"] == "failed" and record["reason"].startswith("plan:") and record["calls"] == 2
    assert 2 <= record["tokens"]["completion"] <= 12
    messages = CurateConfig().prompts.messages(
        "plan", question=EXAMPLES[0]["question"], trace=EXAMPLES[0]["sequential_trace"],
        schema=json.dumps(plan_json_schema()), max_paths=8)
    first_prompt = local.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert record["tokens"]["prompt"] > 2 * len(first_prompt["input_ids"])  # the repair call adds more


def test_built_dataset_trains_with_the_recipe_collator(tmp_path):
    """Tokenized the way TRL tokenizes conversational prompt-completion data, a batch goes through the
    recipe's collator and a tiny Multiverse model, with one segment per path."""
    import torch

    collator_module = pytest.importorskip("multiverse.trl_recipes.collator")
    from multiverse.curation.toy_task import as_chat, as_records
    from multiverse.model_shapes import random_model
    from multiverse.tokenization import train_tokenizer

    data = build_dataset(as_records(EXAMPLES[:4]))["train"]
    tok = train_tokenizer([m["content"] for e in EXAMPLES for m in as_chat(e)], vocab_size=300)
    rows = []
    for row in data:
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
        full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
        n = len(prompt["input_ids"])
        assert full["input_ids"][:n] == prompt["input_ids"]
        rows.append({"input_ids": full["input_ids"], "completion_mask": [0] * n + [1] * (len(full["input_ids"]) - n)})
    model = random_model("tiny", tok).train()
    batch = collator_module.MultiverseDataCollator(model.config.multiverse_tag_ids, tok.pad_token_id)(rows)
    for b, example in enumerate(EXAMPLES[:4]):
        used = set(batch["mv_segment_ids"][b][batch["attention_mask"][b].bool()].tolist())
        assert len(used) == 1 + example["paths"]  # the root and one segment per path
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.lm_head.weight.grad.abs().sum() > 0
