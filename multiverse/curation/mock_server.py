"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions with scripted answers.

Tests use it to exercise the OpenAI backend through its real client (timeouts, status codes, garbage
bodies, a response that drips one byte at a time), and ``toy_oracle`` turns it into an offline stand-in
for a curating LLM on the toy task, to measure what a pipeline run costs. Usage numbers are what the
script says, else characters / 4. ``GET /v1/models`` lists ``models``.

Only complete requests are logged and answered: a client killed while sending one (a killed curate run)
leaves a short body, which is no request at all.
"""

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TASK = re.compile(r"^# Task: ([\w-]+)", re.M)


@dataclass
class Reply:
    content: str | None = None  # the assistant message; ignored when ``body`` is set
    status: int = 200
    body: bytes | None = None  # raw response body, for garbage
    delay: float = 0.0  # seconds to wait before answering, for timeouts
    drip: float = 0.0  # send the whole response one byte at a time, this many seconds apart
    headers: dict = field(default_factory=dict)
    usage: tuple | None = None  # (prompt_tokens, completion_tokens)


def task_of(request: dict) -> str:
    """The prompt's task heading ("plan", "rewrite", "repair", "plan-repair"), from the last user turn."""
    user = [m["content"] for m in request["messages"] if m["role"] == "user"]
    m = TASK.search(user[-1]) if user else None
    return m.group(1) if m else ""


class ChatServer:
    """``script(request_json) -> Reply``; every complete chat request is logged in ``requests`` (thread-safe)."""

    def __init__(self, script, models=()):
        self.script, self.models, self.requests, self._lock = script, list(models), [], threading.Lock()
        self.paths = []  # the path (with its query string) of every logged request
        self._active, self._last = 0, time.monotonic()  # open connections, and when one last did anything
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms delayed-ACK stall

            def handle(self):
                server._busy(+1)
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError):
                    pass  # the client cut the connection (its deadline passed, or it was killed)
                finally:
                    server._busy(-1)

            def do_GET(self):
                if not self.path.rstrip("/").endswith("/models"):
                    return self._send(Reply("no such route", status=404), {})
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in server.models]
                self._send(Reply(body=json.dumps({"object": "list", "data": data}).encode()), {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:  # the client died mid-request: nothing to log or answer
                    self.close_connection = True
                    return
                try:
                    request = json.loads(raw)
                    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
                        raise ValueError("the body has no 'messages' list")
                except ValueError as err:
                    return self._send(Reply(f"bad request: {err}", status=400), {})
                with server._lock:
                    server.requests.append(request)
                    server.paths.append(self.path)
                self._send(server.script(request), request)

            def _send(self, reply: Reply, request: dict):
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if reply.body is not None else json.dumps(_completion(request, reply)).encode()
                head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                        f"Content-Type: {'application/json' if reply.body is None else 'text/html'}",
                        f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in reply.headers.items()]
                raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
                try:
                    if not reply.drip:
                        self.wfile.write(raw)
                        return
                    for k in range(len(raw)):  # a byte at a time: no gap ever reaches a read timeout
                        self.wfile.write(raw[k:k + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test): nothing to answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _busy(self, change: int):
        with self._lock:
            self._active += change
            self._last = time.monotonic()

    def settle(self, quiet: float = 0.3, timeout: float = 30.0):
        """Wait until no connection is open and none was for ``quiet`` seconds: a client killed after
        sending a request may still have it read and logged a moment later."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._active and time.monotonic() - self._last >= quiet:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server still has {self._active} open connections after {timeout} s")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def start(self) -> "ChatServer":
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _completion(request: dict, reply: Reply) -> dict:
    if reply.status >= 400:
        return {"error": {"message": reply.content or f"scripted HTTP {reply.status}", "type": "scripted"}}
    prompt_chars = sum(len(m.get("content") or "") for m in request.get("messages", []))
    usage = reply.usage or (prompt_chars // 4, len(reply.content or "") // 4)
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply.content}}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": usage[0] + usage[1]}}


def find_example(request: dict, examples: list[dict]) -> dict:
    """The example whose question appears in the conversation. The longest match wins: a toy question
    with dials 1-2 is a prefix of one that continues with dials 3-4."""
    text = "\n".join(m.get("content") or "" for m in request["messages"])
    found = [e for e in examples if e["question"] in text]
    if not found:
        raise KeyError("no known question in the request")
    return max(found, key=lambda e: len(e["question"]))


def toy_oracle(examples: list[dict]):
    """A script that answers like a perfect curating LLM on toy-task examples (``toy_task.make_examples``)."""

    def script(request: dict) -> Reply:
        example = find_example(request, examples)
        if task_of(request) in ("plan", "plan-repair"):
            return Reply(json.dumps(example["plan"]))
        return Reply(example["multiverse_trace"])

    return script
