"""The curation validator, schema, checks and inputs: strict rules with their place, on crafted and real text."""

import json

import pytest

from multiverse.curation.checkpoint import Checkpoint
from multiverse.curation.independence import check_independence
from multiverse.curation.inputs import load_items
from multiverse.curation.prompts import Prompts
from multiverse.curation.schema import PlanError, parse_plan
from multiverse.curation.source_checks import SourceBounds, source_checks
from multiverse.curation.validate import canonicalize, check_blocks, extract_trace, strip_structure, validate_trace
from multiverse.modeling_multiverse.parser import StructureError, parse
from multiverse.transcripts import read_transcript
from samples import corpus_sets

GOOD = ("Let me split this.\n<Parallel>\n<Goal>\n<Outline>\n1: area of A\n</Outline>\n<Outline>\n2: area of B\n"
        "</Outline>\n</Goal>\n<Path>\n1: A is 3 by 4, so its area is 12.\n</Path>\n<Path>\n2: B is 5 by 6, so its "
        "area is 30.\n</Path>\n<Conclusion>\nTogether 12 + 30 = 42.\n</Conclusion>\n</Parallel>\nSo the answer is 42.")


def test_good_trace_is_valid_and_canonical():
    assert validate_trace(GOOD) == []
    assert canonicalize(GOOD) == GOOD


@pytest.mark.parametrize("broken, rule, snippet", [
    (GOOD.replace("<Path>\n2: B is 5 by 6, so its area is 30.\n</Path>\n", ""), "path-count", "<Conclusion>"),
    (GOOD.replace("</Goal>\n", "</Goal>\nstray words\n"), "text-between-tags", "stray words"),
    (GOOD.replace("</Outline>\n</Goal>", "</Outline>\n<Path>\n</Goal>"), "stray-tag", "<Path>\n</Goal>"),
    (GOOD.split("<Conclusion>")[0], "truncated", ""),
    (GOOD.replace("<Path>\n2: B", "<Path>\n1: B"), "path-label", "1: B"),
    (GOOD.replace("2: area of B", "area of B"), "outline-label", "area of B"),
    (GOOD.replace("<Path>\n1: A", "<Path>\nA"), "path-label", "A is 3"),
    ("<Think>\n" + GOOD, "think-tag", "<Think>"),
    ("No structure at all.", "no-block", "No structure"),
])
def test_each_rule_is_named_with_its_place(broken, rule, snippet):
    violations = validate_trace(broken)
    assert violations, f"expected [{rule}]"
    v = violations[0]
    assert v.rule == rule, str(v)
    assert broken[v.index:].startswith(snippet) or broken[v.index:].lstrip().startswith(snippet), str(v)
    before = broken[:v.index]
    assert v.line == before.count("\n") + 1 and v.column == len(before.rsplit("\n", 1)[-1]) + 1
    assert ">>>" in v.excerpt and f"[{rule}] line {v.line}" in str(v)


def test_nested_labels_follow_the_enclosing_path():
    inner = ("<Parallel>\n<Goal>\n<Outline>\n{a}: x\n</Outline>\n<Outline>\n{b}: y\n</Outline>\n</Goal>\n"
             "<Path>\n{a}: x\n</Path>\n<Path>\n{b}: y\n</Path>\n<Conclusion>\nxy\n</Conclusion>\n</Parallel>")
    trace = GOOD.replace("1: A is 3 by 4, so its area is 12.", "1: A\n" + inner.format(a="1.1", b="1.2"))
    assert validate_trace(trace) == []
    wrong = GOOD.replace("1: A is 3 by 4, so its area is 12.", "1: A\n" + inner.format(a="1", b="2"))
    assert [v.rule for v in validate_trace(wrong)] == ["outline-label", "outline-label"]


def test_extract_and_canonicalize_llm_answers():
    messy = ("```text\n<Think>so:<Parallel><Goal><Outline>1: a</Outline>\n\n<Outline>  2: b</Outline></Goal>"
             "<Path>1: a</Path><Path>2: b</Path><Conclusion>ab</Conclusion></Parallel>done</Think>\n```")
    trace = extract_trace(messy)
    assert trace == ("so:\n<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n"
                     "<Path>\n1: a\n</Path>\n<Path>\n2: b\n</Path>\n<Conclusion>\nab\n</Conclusion>\n</Parallel>\ndone")
    assert validate_trace(trace) == [] and canonicalize(trace) == trace


def test_strip_structure_keeps_the_reasoning_only():
    plain = strip_structure(GOOD)
    assert plain == ("Let me split this.\nA is 3 by 4, so its area is 12.\nB is 5 by 6, so its area is 30.\n"
                     "Together 12 + 30 = 42.\nSo the answer is 42.")


@pytest.mark.parametrize("files, expected", corpus_sets(dict(complete=70, incomplete=3),
                                                          dict(complete=100, incomplete=5)))
def test_corpus_complete_blocks_accepted_incomplete_report_their_rule(files, expected):
    complete = incomplete = 0
    for path in files:
        text = read_transcript(path).completion
        repairs = parse(text).repairs
        for row in check_blocks(text):
            where = f"{path} block at {row['start']}"
            if row["complete"]:
                complete += 1
                assert row["rule"] is None, f"{where}: {row['message']}"
            else:
                incomplete += 1
                # The strict verdict is the first thing the tolerant parse had to repair in that block ...
                inside = [r for r in repairs if row["start"] <= r.index <= row["end"]]
                assert row["rule"] is not None, where
                assert (row["rule"], row["index"]) == (inside[0].rule, inside[0].index), where
            # ... and what a strict parse of the block's text alone says (how check_blocks worked out each one)
            try:
                parse(text[row["start"]:row["end"]], strict=True)
                alone = (None, None)
            except StructureError as err:
                alone = (err.rule, row["start"] + err.index)
            assert (row["rule"], row["index"]) == alone, where
    assert complete >= expected["complete"] and incomplete >= expected["incomplete"], (complete, incomplete)


def test_plan_schema_and_consistency():
    plan = parse_plan('Sure!\n```json\n{"steps": [{"id": 1, "summary": "a"}, {"id": 2, "summary": "b"}, '
                      '{"id": 3, "summary": "c", "depends_on": [1, 2]}], '
                      '"blocks": [{"steps": [1, 2], "combine": "add"}]}\n```')
    assert plan.blocks[0].steps == [1, 2]
    cases = {
        "no JSON here": "invalid-json",
        '{"steps": [': "invalid-json",
        '{"steps": [{"id": 1, "summary": "a"}], "blocks": [], "extra": 1}': "schema",
        '{"steps": [{"id": 1, "summary": "a"}, {"id": 2, "summary": "b", "depends_on": [1]}], '
        '"blocks": [{"steps": [1, 2], "combine": "x"}]}': "schema",
        '{"steps": [{"id": 1, "summary": "a", "depends_on": [2]}, {"id": 2, "summary": "b"}], "blocks": []}': "schema",
        '{"steps": [{"id": 1, "summary": "a"}], "blocks": [{"steps": [1, 9], "combine": "x"}]}': "schema",
    }
    for text, kind in cases.items():
        with pytest.raises(PlanError) as err:
            parse_plan(text)
        assert err.value.kind == kind, (text, str(err.value))
    with pytest.raises(PlanError, match="step 2 depends on \\[1\\] in the same block"):
        parse_plan(list(cases)[3])


def test_source_checks():
    source = "A is 3 by 4, so its area is 12. B is 5 by 6, so its area is 30. Together 42. So the answer is 42."
    checks, failed = source_checks(source, GOOD, "\\boxed{42}", SourceBounds())
    assert failed is None and checks["answer_kept"] is True and 0.8 < checks["length_ratio"] < 1.3
    assert source_checks(source, GOOD.replace("42", "41"), "\\boxed{42}", SourceBounds())[1] == "answer-lost"
    assert source_checks(source, GOOD, "\\boxed{42}", SourceBounds(max_length_ratio=0.9))[1] == "length-ratio"
    unrelated = GOOD.replace("area", "zone").replace("by", "x").replace("so its", "hence").replace("is", "=")
    checks, failed = source_checks(source, unrelated, "42", SourceBounds(min_overlap=0.8))
    assert failed == "low-overlap" and checks["overlap"] < 0.8
    assert source_checks("no answer stated", GOOD, "7", SourceBounds(0.01, 100, 0))[0]["answer_kept"] is None


def test_independence_flags_sibling_use():
    assert check_independence(GOOD) == []
    mention = GOOD.replace("so its area is 30.", "and with the result of path 1 the area is 30.")
    flags = check_independence(mention)
    assert [(f["path"], f["kind"]) for f in flags] == [("2", "mention")]
    value = GOOD.replace("so its area is 30.", "so its area is 30, and 30 + 12 = 42.")
    value = value.replace("Together 12 + 30 = 42.", "Together 42.")
    flags = check_independence(value)
    assert [(f["path"], f["kind"]) for f in flags] == [("2", "value")] and "12" in flags[0]["evidence"]
    # A number the question gives is visible to every path: no flag.
    assert check_independence(value, question="Use 12 where needed.") == []


def test_prompts_render_and_override(tmp_path):
    prompts = Prompts()
    text = prompts.render("plan", question="Q?", trace="T.", schema="{}", max_paths=4)
    assert "Q?" in text and "T." in text and text.startswith("# Task: plan")
    assert "1. [rule] x" in prompts.render("repair", errors=["[rule] x"])
    custom = tmp_path / "plan.jinja"
    custom.write_text("# Task: plan\n{{ question }} only")
    rendered = Prompts({"plan": custom}).render("plan", question="Q", trace="", schema="", max_paths=2)
    assert rendered == "# Task: plan\nQ only"
    with pytest.raises(FileNotFoundError, match="--plan-prompt"):
        Prompts({"plan": tmp_path / "missing.jinja"})
    custom.write_text("{{ nope }}")
    with pytest.raises(ValueError, match="prompt 'plan'.*nope"):
        Prompts({"plan": custom}).render("plan", question="Q")
    assert Prompts().fingerprint() != Prompts({"plan": custom}).fingerprint()


def test_inputs_s1k_columns_jsonl_and_saved_dataset(tmp_path):
    import datasets

    rows = [{"question": f"q{i}", "deepseek_thinking_trajectory": f"t{i}", "deepseek_attempt": f"a{i}",
             "solution": "s"} for i in range(3)]
    path = tmp_path / "s1k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(path)
    assert [(i.question, i.trace, i.answer) for i in items] == [(f"q{i}", f"t{i}", f"a{i}") for i in range(3)]
    assert len({i.id for i in items}) == 3 and load_items(path)[0].id == items[0].id
    datasets.DatasetDict(train=datasets.Dataset.from_list(
        [{"problem": "q", "thinking_trajectories": ["t"], "attempt": "a"}])).save_to_disk(str(tmp_path / "ds"))
    (item,) = load_items(tmp_path / "ds")
    assert (item.question, item.trace, item.answer) == ("q", "t", "a")
    with pytest.raises(ValueError, match="--trace-column 'nope' is not a column.*deepseek_attempt"):
        load_items(path, trace_column="nope")
    path.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="s1k.jsonl:2: not a JSON object"):
        load_items(path)


def test_checkpoint_cuts_a_torn_line_and_last_record_wins(tmp_path):
    path = tmp_path / "ck.jsonl"
    rec = {"id": "a", "outcome": "failed"}
    path.write_text(json.dumps(rec) + "\n" + json.dumps({"id": "a", "outcome": "ok"}) + "\n" + '{"id": "b", "outc')
    with Checkpoint(path) as ck:
        assert ck.torn == 1 and ck.records["a"]["outcome"] == "ok" and "b" not in ck.records
        assert ck.done() == {"a"}
        ck.append({"id": "b", "outcome": "failed"})
        assert ck.done(retry_failed=True) == {"a"}
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1]) == {"id": "b", "outcome": "failed"}
