"""The parser on real Multiverse-32B output and on hand-made broken inputs."""

import json

import pytest
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.modeling_multiverse.parser import StructureError, parse, well_formed_prefix
from multiverse.testing import corpus_file, corpus_files
from multiverse.transcripts import read_transcript
from samples import corpus_sets

GOOD = ("<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>\n"
        "<Path>\n1: x\n</Path>\n<Path>\n2: y\n</Path>\n<Conclusion>\nz\n</Conclusion>\n</Parallel>\n")


@pytest.mark.parametrize("files, expected", corpus_sets(dict(files=8, broken=4), dict(files=30, broken=5)))
def test_all_corpus_files_parse_tolerantly(files, expected):
    assert len(files) == expected["files"]
    broken = 0
    for path in files:
        text = read_transcript(path).completion
        result = parse(text)
        assert result.length == len(text)
        assert 0 < result.critical_path <= result.length
        broken += not result.ok
    assert broken >= expected["broken"]  # the corpus has truncated and overrun transcripts; each must be recorded


@pytest.mark.parametrize("files, expected", corpus_sets({}, {}))
def test_strict_parser_rejects_broken_corpus_files_and_names_the_rule(files, expected):
    seen = set()
    for path in files:
        text = read_transcript(path).completion
        if parse(text).ok:
            parse(text, strict=True)
            continue
        with pytest.raises(StructureError) as err:
            parse(text, strict=True)
        assert err.value.rule in {"stray-tag", "truncated", "path-count"}
        assert 0 <= err.value.index <= len(text)
        assert str(err.value).startswith(f"[{err.value.rule}] at char {err.value.index}")
        seen.add(err.value.rule)
    assert "truncated" in seen


def test_truncated_corpus_file_names_truncation():
    text = read_transcript(corpus_file("entry_17")).completion  # it stops inside an outline
    with pytest.raises(StructureError, match=r"\[truncated\]"):
        parse(text, strict=True)
    assert well_formed_prefix(text) == len(text)


@pytest.mark.parametrize("broken, rule, at", [
    (GOOD.replace("<Path>\n2: y\n</Path>\n", ""), "path-count", GOOD.index("<Path>\n2")),
    (GOOD.replace("\n1: x", "\n3: x"), "path-label", GOOD.index("1: x") - 1),
    (GOOD.replace("</Goal>", "stray words</Goal>"), "text-between-tags", GOOD.index("</Goal>")),
    (GOOD.replace("<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n", ""), "empty-goal", None),
    (GOOD[:-15], "truncated", len(GOOD) - 15),
    (GOOD.replace("1: x\n", "1: x\n<Think>"), "stray-tag", GOOD.index("1: x\n") + 5),
])
def test_strict_errors_name_rule_and_offset(broken, rule, at):
    with pytest.raises(StructureError) as err:
        parse(broken, strict=True)
    assert err.value.rule == rule
    if at is not None:
        assert err.value.index == at
    assert not parse(broken).ok  # the tolerant reading records the same problem


def test_tree_and_labels():
    result = parse(GOOD, strict=True)
    (block,) = result.blocks
    assert [o.label for o in block.outlines] == ["1", "2"]
    assert [p.label for p in block.paths] == ["1", "2"]
    assert GOOD[block.paths[1].start:block.paths[1].end] == "\n<Path>\n2: y\n</Path>"
    assert block.closed and block.conclusion is not None


def test_stats_cli_json():
    files = [str(f) for f in corpus_files()[:3]]
    out = CliRunner().invoke(app, ["stats", "--json", *files])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.strip().splitlines()]
    assert len(rows) == 4 and rows[-1]["total"] is True and rows[-1]["files"] == 3
    for row in rows[:3]:
        assert set(row) >= {"file", "ok", "repairs", "blocks", "max_depth", "paths_per_block", "units", "length",
                            "critical_path", "ideal_parallelism"}
        assert row["units"] == "chars"
        assert row["ideal_parallelism"] == pytest.approx(row["length"] / row["critical_path"], abs=1e-3)
    assert rows[-1]["length"] == sum(r["length"] for r in rows[:3])


def test_stats_cli_with_tokenizer(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    out = CliRunner().invoke(app, ["stats", "--json", "--tokenizer", str(tmp_path / "tok"), corpus_files()[0]])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output.splitlines()[0])
    assert row["units"] == "tokens" and row["blocks"] == 3 and row["critical_path"] < row["length"]
