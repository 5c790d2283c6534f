"""Nothing leaks, nothing hangs: credentials in endpoints, whole-request timeouts, any exception of one item,
and a test server that only answers complete requests."""

import base64
import json
import logging
import socket
import time

import pytest
import typer
from typer.testing import CliRunner

from multiverse.curation.backends import BackendError, OpenAIBackend
from multiverse.curation.checkpoint import Checkpoint
from multiverse.curation.cli import register
from multiverse.curation.inputs import Item
from multiverse.curation.mock_server import ChatServer, Reply, find_example, task_of, toy_oracle
from multiverse.curation.pipeline import CurateConfig, curate_item
from multiverse.curation.redaction import Redactor, redact_url
from multiverse.curation.runner import run_curation
from multiverse.curation.toy_task import make_examples

EXAMPLES = make_examples(6, seed=5)
USER, PASSWORD, QUERY_KEY, ENV_KEY = "canaryuser", "canary-pw-8d1", "canary-qk-77e", "sk-canary-env-3f9"
CANARIES = (PASSWORD, QUERY_KEY, ENV_KEY, USER)


def curate_app():
    app = typer.Typer()
    register(app)
    return app


def items(examples=EXAMPLES):
    return [Item(f"item{i}", i, e["question"], e["sequential_trace"], e["answer"]) for i, e in enumerate(examples)]


def write_input(path, examples=EXAMPLES):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def secret_url(server):
    return server.url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"?api_key={QUERY_KEY}&x=1"


def test_redact_url_and_text():
    url = f"https://{USER}:{PASSWORD}@api.example.com/v1?api_key={QUERY_KEY}&token=abc123#frag"
    assert redact_url(url) == "https://***@api.example.com/v1?api_key=***&token=***#***"
    redactor = Redactor.for_endpoint(url, ENV_KEY)
    text = f"GET {url} failed; key {ENV_KEY}; pw%2F {PASSWORD}"
    assert not any(c in redactor.text(text) for c in CANARIES)
    assert redactor.data({"a": [url, 3]}) == {"a": [redactor.text(url), 3]}
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert redactor.text(f"Authorization: Basic {basic}") == "Authorization: Basic ***"
    assert redact_url("http://[::1/v1") == "***"  # unparseable: nothing shown


def test_credentials_never_reach_files_logs_or_terminal(tmp_path, monkeypatch):
    """Canary secrets in the endpoint (user info, query) and the key variable: the server gets them, and no
    output file, stderr line, exception message or library log record shows them."""
    oracle = toy_oracle(EXAMPLES)
    monkeypatch.setenv("CANARY_KEY", ENV_KEY)

    def script(request):
        i = EXAMPLES.index(find_example(request, EXAMPLES))
        echo = f"bad key {ENV_KEY} for {USER}:{PASSWORD} at /v1?api_key={QUERY_KEY}"
        return {1: Reply(echo, status=400), 2: Reply(echo, status=503)}.get(i) or oracle(request)

    logs = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: logs.append(record.getMessage())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with ChatServer(script) as server:
            args = ["curate", str(write_input(tmp_path / "in.jsonl")), str(tmp_path / "out"), "--endpoint",
                    secret_url(server), "--model", "m", "--api-key-env", "CANARY_KEY", "--retries", "0",
                    "--no-progress"]
            result = CliRunner().invoke(curate_app(), args)
            paths = list(server.paths)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert result.exit_code == 0, result.output
    assert all(f"api_key={QUERY_KEY}" in p for p in paths), "the query string must still reach the server"
    assert any("HTTP Request" in m for m in logs), "httpx's request log was not captured"
    written = {p.name: p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "out").rglob("*")
               if p.is_file()}
    assert {"report.json", "README.md", "checkpoint.jsonl"} <= set(written)
    outputs = {"stdout+stderr": result.output + result.stderr, "logs": "\n".join(logs), **written}
    for name, text in outputs.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary!r} leaked into {name}"
    assert "m at http://***@127.0.0.1" in written["report.json"] and "api_key=***" in written["README.md"]


def test_fatal_errors_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("CANARY_KEY", ENV_KEY)
    with ChatServer(lambda request: Reply(f"key {ENV_KEY} refused", status=401)) as server:
        url = secret_url(server)
        result = CliRunner().invoke(curate_app(), ["curate", str(write_input(tmp_path / "in.jsonl")),
                                                   str(tmp_path / "out"), "--endpoint", url, "--model", "m",
                                                   "--api-key-env", "CANARY_KEY", "--no-progress"])
    down = CliRunner().invoke(curate_app(), ["curate", str(tmp_path / "in.jsonl"), str(tmp_path / "out2"),
                                             "--endpoint", url, "--model", "m", "--no-progress"])
    for run in (result, down):
        assert run.exit_code == 2 and not any(c in run.output + run.stderr for c in CANARIES), run.output
    assert "refused the API key" in result.stderr and "cannot reach http://***@127.0.0.1" in down.stderr


def test_a_dripping_server_is_cut_at_the_total_timeout_and_the_run_goes_on(tmp_path):
    """One byte every half second keeps httpx's read timeout happy forever; the total deadline cuts it."""
    oracle = toy_oracle(EXAMPLES)

    def script(request):
        first = find_example(request, EXAMPLES) is EXAMPLES[0]
        return Reply(oracle(request).content, drip=0.5) if first else oracle(request)

    with ChatServer(script) as server:
        backend = OpenAIBackend(server.url, "m", timeout=2.0, retries=0)
        started = time.monotonic()
        report = run_curation(items()[:2], backend, CurateConfig(), tmp_path / "ck.jsonl", concurrency=1,
                              progress=False)
        elapsed = time.monotonic() - started
    with Checkpoint(tmp_path / "ck.jsonl") as ckpt:
        first, second = ckpt.records["item0"], ckpt.records["item1"]
    assert first["reason"] == "backend:timeout" and "total timeout of 2.0 s" in first["detail"]
    assert 2.0 <= first["seconds"] <= 4.0, first["seconds"]
    assert second["outcome"] == "ok" and elapsed < 10
    assert report["transient_failures"] == 1


def test_a_slow_first_byte_is_a_timeout():
    with ChatServer(lambda request: Reply("late", delay=3.0)) as server:
        backend = OpenAIBackend(server.url, "m", timeout=1.0, retries=0)
        started = time.monotonic()
        with pytest.raises(BackendError, match="timeout"):
            backend.complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 2.5


class RaisingBackend:
    """Answers like the toy oracle, except that one item's call raises whatever it is given."""

    def __init__(self, error, bad_question):
        self.error, self.bad_question, self.oracle = error, bad_question, toy_oracle(EXAMPLES)

    def complete(self, messages, response_format=None):
        from multiverse.curation.backends import Completion

        if self.bad_question in messages[-1]["content"]:
            raise self.error
        return Completion(self.oracle({"messages": messages}).content)


def test_any_exception_of_one_item_is_recorded_and_a_rerun_skips_it(tmp_path):
    backend = RaisingBackend(RecursionError("maximum recursion depth exceeded"), EXAMPLES[1]["question"])
    report = run_curation(items()[:3], backend, CurateConfig(), tmp_path / "ck.jsonl", concurrency=2,
                          progress=False)
    assert report["outcomes"] == {"ok": 2, "failed": 1}
    assert report["failure_reasons"] == {"error:RecursionError": 1}
    again = run_curation(items()[:3], backend, CurateConfig(), tmp_path / "ck.jsonl", progress=False)
    assert again["run"]["ran"] == 0 and again["run"]["resumed"] == 3


def test_a_deeply_nested_json_plan_is_an_invalid_plan_not_a_crash():
    deep = '{"steps": ' + "[" * 200_000
    oracle = toy_oracle(EXAMPLES)

    def script(request):
        return Reply(deep) if task_of(request) == "plan" else oracle(request)

    with ChatServer(script) as server:
        record = curate_item(items()[0], OpenAIBackend(server.url, "m", retries=0), CurateConfig(max_repairs=1))
    assert record["outcome"] == "ok" and record["errors"][0]["rule"] == "invalid-json"
    assert "nested too deeply" in record["errors"][0]["message"]


def test_the_test_server_ignores_cut_requests_and_refuses_bodies_without_messages():
    """A client killed mid-request leaves headers and a short body: that is no request (the cause of the
    resume test's KeyError: 'messages' on an empty body)."""
    with ChatServer(toy_oracle(EXAMPLES)) as server:
        host, port = "127.0.0.1", server.httpd.server_port
        for body in (b"", b'{"messa'):
            with socket.create_connection((host, port)) as sock:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 500\r\n\r\n" + body)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(100) == b""  # closed without an answer
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert server.requests == []


def test_an_unforeseen_client_error_is_recorded_redacted_and_not_retried(monkeypatch):
    monkeypatch.setenv("CANARY_KEY", ENV_KEY)
    backend = OpenAIBackend(f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1", "m", api_key_env="CANARY_KEY", retries=3)
    calls = []

    def boom(call, deadline=None):
        calls.append(call)
        raise RuntimeError(f"client bug near http://{USER}:{PASSWORD}@127.0.0.1:9/v1 with {ENV_KEY}")

    monkeypatch.setattr(backend, "_request", boom)
    with pytest.raises(BackendError, match=r"error-RuntimeError: client bug near http://\*\*\*:\*\*\*@") as err:
        backend.complete([{"role": "user", "content": "hi"}])
    assert len(calls) == 1 and not any(c in str(err.value) for c in CANARIES)
