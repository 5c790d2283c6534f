"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions with scripted answers.

Tests use it to exercise the OpenAI backend through its real client (timeouts, status codes, garbage
bodies), and ``toy_oracle`` turns it into an offline stand-in for a curating LLM on the toy task, to
measure what a pipeline run costs. Usage numbers are what the script says, else characters / 4.
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
    headers: dict = field(default_factory=dict)
    usage: tuple | None = None  # (prompt_tokens, completion_tokens)


def task_of(request: dict) -> str:
    """The prompt's task heading ("plan", "rewrite", "repair", "plan-repair"), from the last user turn."""
    user = [m["content"] for m in request["messages"] if m["role"] == "user"]
    m = TASK.search(user[-1]) if user else None
    return m.group(1) if m else ""


class ChatServer:
    """``script(request_json) -> Reply``; every request is logged in ``requests`` (thread-safe)."""

    def __init__(self, script):
        self.script, self.requests, self._lock = script, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms delayed-ACK stall

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(request)
                reply = server.script(request)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if reply.body is not None else json.dumps(_completion(request, reply)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json" if reply.body is None else "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

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
