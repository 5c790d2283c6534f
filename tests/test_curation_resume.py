"""Never lose work: Ctrl-C, then a killed ``multiverse curate`` process, then a resume lose nothing and redo nothing."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from multiverse.curation.inputs import load_items
from multiverse.curation.mock_server import ChatServer, Reply, find_example, toy_oracle
from multiverse.curation.pipeline import CurateConfig
from multiverse.curation.backends import OpenAIBackend
from multiverse.curation.runner import run_curation
from multiverse.curation.toy_task import make_examples

EXAMPLES = make_examples(30, seed=11)


def lines(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def wait_for_lines(path, n, alive, timeout=60):
    deadline = time.monotonic() + timeout
    while len(lines(path)) < n:
        assert alive(), "the run ended early"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)


def questions(requests):
    return {find_example(r, EXAMPLES)["question"] for r in requests}


def test_interrupt_kill_and_resume(tmp_path):
    from typer.testing import CliRunner

    from multiverse.cli import app

    source = tmp_path / "toy.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    out, ckpt = tmp_path / "out", tmp_path / "out" / "checkpoint.jsonl"
    oracle = toy_oracle(EXAMPLES)
    slow = {"delay": 0.05}

    with ChatServer(lambda request: Reply(oracle(request).content, delay=slow["delay"])) as server:
        # 1. Ctrl-C (a real SIGINT to this process): running items finish and are recorded, nothing else starts.
        backend = OpenAIBackend(server.url, "oracle", retries=0)
        main = threading.main_thread().ident
        interrupter = threading.Thread(target=lambda: (wait_for_lines(ckpt, 4, lambda: True),
                                                       signal.pthread_kill(main, signal.SIGINT)))
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            run_curation(load_items(source), backend, CurateConfig(), ckpt, concurrency=3, progress=False)
        interrupter.join()
        first = lines(ckpt)
        assert 4 <= len(first) < len(EXAMPLES)
        assert questions(server.requests) == {r["question"] for r in first}, "an item that ran was not recorded"
        asked_in_first = len(server.requests)

        # 2. Kill the CLI process midway: whatever finished is on disk, and nothing finished is asked again.
        args = [str(source), str(out), "--endpoint", server.url, "--model", "oracle", "--concurrency", "3"]
        proc = subprocess.Popen([sys.executable, "-m", "multiverse.cli", "curate", *args, "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_lines(ckpt, len(first) + 4, lambda: proc.poll() is None)
        proc.kill()
        proc.wait(timeout=30)
        server.settle()  # a request the killed run had sent is logged now, not during step 3
        second = lines(ckpt)
        assert len(second) >= len(first) + 4 and second[:len(first)] == first
        assert not questions(server.requests[asked_in_first:]) & {r["question"] for r in first}
        asked_before_third = len(server.requests)

        # 3. Resume to the end with the same command.
        slow["delay"] = 0.0
        result = CliRunner().invoke(app, ["curate", *args, "--no-progress"])
        assert result.exit_code == 0, result.output
    final = lines(ckpt)
    ids = [r["id"] for r in final]
    assert len(ids) == len(set(ids)) == len(EXAMPLES), "an item was recorded twice or lost"
    assert all(r["outcome"] == "ok" for r in final)
    assert not questions(server.requests[asked_before_third:]) & {r["question"] for r in second}
    assert len(server.requests) - asked_before_third == 2 * (len(EXAMPLES) - len(second))
    assert f"{len(second)} already done" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["outcomes"] == {"ok": len(EXAMPLES)} and report["run"]["resumed"] == len(second)
    assert f"| `train` | {len(EXAMPLES)} |" in (out / "README.md").read_text()
    assert os.path.isfile(out / "dataset_dict.json")
