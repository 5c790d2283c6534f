"""Reruns and first-run friction: transient failures run again, the server is checked first, one run per
folder, corrupt checkpoints say where, bad options stop before any LLM call, sequential items are kept."""

import json
import re
from collections import Counter

import pytest
import typer
from typer.testing import CliRunner

from multiverse.curation.checkpoint import Checkpoint, CheckpointInUse, lock_or_fail
from multiverse.curation.cli import register
from multiverse.curation.inputs import load_items
from multiverse.curation.mock_server import ChatServer, Reply, find_example, task_of, toy_oracle
from multiverse.curation.validate import validate_trace
from multiverse.curation.toy_task import make_examples
from multiverse.jsonl import BadLine, JsonlAppender, JsonlError, iter_jsonl, read_jsonl

EXAMPLES = make_examples(5, seed=3)


def invoke(*args):
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


def plain(output: str) -> str:
    """Typer's error panel without its frame and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def curate(server, source, out, *extra):
    return invoke("curate", source, out, "--endpoint", server.url, "--model", "m", "--retries", "0",
                  "--no-progress", *extra)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return path


def index_of(request):
    return EXAMPLES.index(find_example(request, EXAMPLES))


def test_transient_failures_run_again_final_ones_need_retry_failed(tmp_path, source):
    oracle, calls = toy_oracle(EXAMPLES), Counter()
    first_run = {"on": True}

    def script(request):
        i = index_of(request)
        calls[i] += 1
        if first_run["on"] and i == 0:
            return Reply(status=503)
        if i == 1:
            return Reply("no such thing", status=400)
        return oracle(request)

    with ChatServer(script) as server:
        result = curate(server, source, tmp_path / "out")
        assert result.exit_code == 0, result.output
        assert "1 failed transiently" in result.stderr and "rerun the same command" in result.stderr
        assert "1 failed for good" in result.stderr and "--retry-failed" in result.stderr
        first_run["on"] = False
        calls.clear()
        again = curate(server, source, tmp_path / "out")
    assert again.exit_code == 0, again.output
    assert calls == {0: 2}, "only the transient failure runs again"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["outcomes"] == {"ok": 4, "failed": 1} and report["transient_failures"] == 0


def test_a_server_that_is_down_stops_the_run_before_any_item(tmp_path, source):
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        url = server.url
    down = invoke("curate", source, tmp_path / "out", "--endpoint", url, "--model", "m", "--no-progress")
    assert down.exit_code == 2 and "cannot reach" in down.stderr and "is the server up?" in down.stderr
    assert down.stderr.count("\n") == 2 and "Traceback" not in down.output
    with Checkpoint(tmp_path / "out" / "checkpoint.jsonl") as ckpt:
        assert ckpt.records == {}
    with ChatServer(toy_oracle(EXAMPLES), models=["other"]) as server:  # "rerun to continue" is true
        result = curate(server, source, tmp_path / "out")
    assert result.exit_code == 0 and "lists models ['other'], not 'm'" in result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["outcomes"] == {"ok": 5}


def test_one_run_per_output_folder(tmp_path, source):
    (tmp_path / "out").mkdir()
    lock = lock_or_fail(tmp_path / "out" / ".curate.lock", "test")
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        result = curate(server, source, tmp_path / "out")
        assert result.exit_code == 2 and "is in use by another multiverse curate run" in result.stderr
        assert server.requests == []
        lock.release()
        assert curate(server, source, tmp_path / "out").exit_code == 0
    with Checkpoint(tmp_path / "ck.jsonl"):
        with pytest.raises(CheckpointInUse, match="ck.jsonl"):
            Checkpoint(tmp_path / "ck.jsonl")


def test_a_corrupt_middle_line_is_named_and_can_be_skipped(tmp_path, source):
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        assert curate(server, source, tmp_path / "out", "--limit", 3).exit_code == 0
        ckpt = tmp_path / "out" / "checkpoint.jsonl"
        lines = ckpt.read_text().splitlines(keepends=True)
        ckpt.write_text(lines[0] + "{garbage\n" + "".join(lines[1:]))
        before = len(server.requests)
        stopped = curate(server, source, tmp_path / "out")
        assert stopped.exit_code == 2 and "checkpoint.jsonl:2: corrupt line" in stopped.stderr
        assert "--skip-bad-lines" in stopped.stderr and len(server.requests) == before
        result = curate(server, source, tmp_path / "out", "--skip-bad-lines")
    assert result.exit_code == 0, result.output
    assert len(server.requests) - before == 2 * 2, "only the two new items ran"
    assert "{garbage\n" in ckpt.read_text(), "the bad line is left for the user to inspect"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["run"]["skipped_checkpoint_lines"] == [2]


@pytest.mark.parametrize("option, message", [
    (["--mix", "1.5"], "--mix 1.5: must lie in [0, 1]"),
    (["--limit", "-1"], "--limit -1: must be at least 1"),
    (["--limit", "0"], "--limit 0: must be at least 1"),
    (["--id-column", "dial"], "--id-column 'dial' of"),
    (["--split", "train"], "--split 'train': "),
])
def test_bad_options_stop_before_any_llm_call(tmp_path, source, option, message):
    rows = [dict(e, dial=k % 2) for k, e in enumerate(EXAMPLES)]  # ids 0, 1, 0, 1, 0: repeated
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        result = curate(server, source, tmp_path / "out", *option)
        assert result.exit_code == 2 and message in plain(result.output), result.output
        assert server.requests == []
    if option[0] == "--id-column":
        with pytest.raises(ValueError, match=r"repeats 2 values \('0' x3, '1' x2\)"):
            load_items(source, id_column="dial")


def test_http_settings_are_refused_with_a_local_model(tmp_path, source):
    result = invoke("curate", source, tmp_path / "out", "--local-model", tmp_path, "--timeout", 5, "--retries", 1)
    assert result.exit_code == 2 and "--timeout, --retries: only for --endpoint" in plain(result.output)
    assert not (tmp_path / "out").exists(), "refused before anything was made"


def test_items_without_parallel_steps_are_kept_as_sequential_examples(tmp_path, source):
    import datasets

    oracle = toy_oracle(EXAMPLES)
    lone = {"steps": [{"id": 1, "summary": "turn the dials"}], "blocks": []}

    def script(request):
        return Reply(json.dumps(lone)) if index_of(request) == 2 and task_of(request) == "plan" else oracle(request)

    with ChatServer(script) as server:
        result = curate(server, source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "4 ok, 1 sequential" in result.stderr
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert train["format"] == ["multiverse"] * 2 + ["sequential"] + ["multiverse"] * 2
    assert train[2]["completion"][0]["content"] == (f"<Think>\n{EXAMPLES[2]['sequential_trace']}\n</Think>\n"
                                                    f"{EXAMPLES[2]['answer']}")
    assert "1 sequential" in (tmp_path / "out" / "README.md").read_text()


def test_an_empty_block_in_front_of_the_source_is_not_a_rewrite():
    source = "A is 3 by 4, so 12. B is 5 by 6, so 30. Together 42."
    empty = ("<Parallel>\n<Goal>\n<Outline>\n1: A\n</Outline>\n<Outline>\n2: B\n</Outline>\n</Goal>\n<Path>\n1:\n"
             "</Path>\n<Path>\n2:\n</Path>\n<Conclusion>\n</Conclusion>\n</Parallel>\n" + source)
    assert [v.rule for v in validate_trace(empty)] == ["empty-path", "empty-path", "empty-conclusion"]
    full = empty.replace("1:\n</Path>", "1: A is 12.\n</Path>").replace("2:\n</Path>", "2: B is 30.\n</Path>")
    assert validate_trace(full.replace("<Conclusion>\n", "<Conclusion>\n42\n")) == []


def test_validate_prints_a_summary_on_success_too(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    result = invoke("validate", path)
    assert result.exit_code == 0 and result.output.strip() == "ok: 5 JSONL traces, 0 invalid (1 files)"
    path.write_text(path.read_text() + "[1]\n")
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "t.jsonl:6: not a JSON object: expected a JSON object, got list" in plain(result.output)


def test_jsonl_reader_names_lines_and_appender_is_whole_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2\n{"a": "\xc3')
    with pytest.raises(JsonlError, match=r"x.jsonl:3: not a JSON object: Expecting ',' delimiter"):
        read_jsonl(path)
    bad = []
    assert list(iter_jsonl(path, bad_lines=bad)) == [(1, {"a": 1})]
    assert bad == [BadLine(3, 10, "Expecting ',' delimiter at column 8", False),
                   BadLine(4, 18, "invalid UTF-8 at byte 7", True)]
    path.write_text('{"a": 1}')  # a complete last line without its newline is kept, and not run into
    with JsonlAppender(path) as out:
        out.append({"a": "é"})
    assert read_jsonl(path) == [{"a": 1}, {"a": "é"}] and path.read_text().endswith("\n")


def test_checkpoint_lines_that_are_json_but_no_record(tmp_path):
    path = tmp_path / "ck.jsonl"
    path.write_text('{"name": "x"}\n{"name": "y"}\n')
    with pytest.raises(ValueError, match=r"ck.jsonl:1: not a checkpoint record .* another tool"):
        Checkpoint(path)
    path.write_text('{"id": "a", "outcome": "ok"}\n{"name": "y"}\n{"id": "b", "outcome": "failed"}\n')
    with pytest.raises(ValueError, match=r"ck.jsonl:2: corrupt line \(a JSON object but not a checkpoint record"):
        Checkpoint(path)
    with Checkpoint(path, skip_bad_lines=True) as ckpt:
        assert sorted(ckpt.records) == ["a", "b"] and ckpt.skipped_lines == [2]
