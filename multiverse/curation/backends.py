"""LLM backends: any OpenAI-compatible chat-completions endpoint, or a local transformers model.

A backend has one method, ``complete(messages, response_format=None) -> Completion``. It raises
``BackendError`` (recorded as the item's failure, e.g. ``backend:timeout``) once its retries are spent,
and ``FatalBackendError`` for problems that no item can get past (bad key, unknown model, a server that
is down when the run starts): the run stops at once instead of recording the same failure for every item.
``check()`` is called once before any item; ``is_transient(kind)`` says which failures a rerun retries.
Every message and description is redacted (``redaction.Redactor``): no credential of the endpoint or
the API key reaches a record, a report or a terminal.
"""

import json
import os
import random
import ssl
import threading
import time
from dataclasses import dataclass

from ..transcripts import completion_text
from .redaction import Redactor, redact_url


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


class BackendError(RuntimeError):
    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(f"{kind}: {message}")


class FatalBackendError(RuntimeError):
    pass


# Failures a later run can get past: they are recorded, but a rerun tries those items again.
TRANSIENT_KINDS = ("timeout", "connection-error", "rate-limited", "http-408", "http-409")
CHECK_SECONDS = 30.0  # listing models is instant on a live server


def is_transient(kind: str) -> bool:
    return kind in TRANSIENT_KINDS or (kind.startswith("http-5") and len(kind) == 8)


class OpenAIBackend:
    """Chat completions over HTTP. Retries 408/409/429/5xx, timeouts, dropped connections and
    malformed responses with jittered exponential backoff (honouring ``Retry-After``).

    ``timeout`` bounds each whole request: connecting (also at most ``connect_timeout``), waiting for the
    first byte and the gap between bytes (httpx's timeouts), and the total (an anyio deadline around the
    request: a server that drips its answer one byte at a time is cut there). Each request runs in its
    own event loop with its own client, so the deadline cancels that request's connection and nothing else.
    """

    def __init__(self, endpoint: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600.0,
                 connect_timeout: float = 10.0, retries: int = 4, backoff: float = 1.0, max_backoff: float = 60.0,
                 temperature: float = 0.0, max_tokens: int | None = None, seed: int | None = None):
        import openai

        api_key = os.environ.get(api_key_env) or "EMPTY"  # local vLLM/SGLang take any key; the client wants one
        self.redactor = Redactor.for_endpoint(endpoint, api_key)
        self.redactor.install_log_filter()
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout), ("backoff", backoff),
                            ("max_backoff", max_backoff)):
            if not value >= 0 or (name.endswith("timeout") and value == 0):
                raise ValueError(f"{name}={value} must be positive")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        base, query = _split_query(endpoint, self.redactor)
        # The client's own retry loop cannot be tuned (fixed 0.5 s to 8 s), so it is off and ours runs.
        # A query string (``?api_key=...``) cannot stay in base_url, where paths are appended after it.
        self._client_args = dict(base_url=base, api_key=api_key, default_query=query or None, max_retries=0,
                                 timeout=openai.Timeout(timeout, connect=min(connect_timeout, timeout)))
        # Loading the CA store takes ~0.1 s of CPU: once per backend, not once per request's client. The
        # standard library's context honours SSL_CERT_FILE/SSL_CERT_DIR, whichever httpx openai ships with.
        self._ssl_context = ssl.create_default_context()
        self.endpoint, self.model, self.retries, self.timeout = endpoint, model, retries, timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.sampling = {"temperature": temperature}
        if max_tokens is not None:
            self.sampling["max_tokens"] = max_tokens
        if seed is not None:
            self.sampling["seed"] = seed
        self._openai = openai

    def describe(self) -> str:
        return f"{self.model} at {redact_url(self.endpoint)}"

    def _request(self, call, deadline: float | None = None):
        """``await call(client)`` under the total deadline; a missed deadline raises ``TimeoutError``."""
        import anyio

        async def run():
            http_client = self._openai.DefaultAsyncHttpxClient(verify=self._ssl_context)
            async with self._openai.AsyncOpenAI(**self._client_args, http_client=http_client) as client:
                with anyio.fail_after(deadline or self.timeout):
                    return await call(client)

        return anyio.run(run)

    def check(self):
        """One cheap request (``GET /models``) before any item runs: a server that is down, or refuses
        the key, stops the run with one line instead of failing every item. Returns a warning or None."""
        async def models(client):
            return [m.id async for m in client.models.list()]

        try:
            served = self._request(models, deadline=min(self.timeout, CHECK_SECONDS))
        except Exception as err:  # noqa: BLE001 - classified below
            status = getattr(err, "status_code", None)
            if status == 404:
                return None  # some gateways have no /models route; the first item will tell
            if status in (401, 403):
                self._classify(err)  # raises the fatal key error
            raise FatalBackendError(f"cannot reach {redact_url(self.endpoint)} (GET /models: "
                                    f"{self._short(err)}); is the server up?") from None
        if served and self.model not in served:
            return (f"warning: {redact_url(self.endpoint)} lists models {served[:10]}, not {self.model!r}; "
                    "trying it anyway")
        return None

    def complete(self, messages: list[dict], response_format: dict | None = None) -> Completion:
        extra = {"response_format": response_format} if response_format else {}

        async def chat(client):
            return await client.chat.completions.create(model=self.model, messages=messages, **self.sampling,
                                                        **extra)

        for attempt in range(self.retries + 1):
            try:
                return self._completion(self._request(chat))
            except Exception as err:  # noqa: BLE001 - classified below
                kind, retry_after = self._classify(err)
                if attempt == self.retries or kind == "bad-request" or kind.startswith("error-"):
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise BackendError(kind, f"{self._short(err)}{tries}") from None
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
                time.sleep(min(self.max_backoff, retry_after) if retry_after is not None else delay)
        raise AssertionError("unreachable")

    def _completion(self, response) -> Completion:
        choices = getattr(response, "choices", None)
        message = choices[0].message if choices else None
        if message is None or not isinstance(message.content, str):
            raise _BadResponse(f"no message content in response: {str(response)[:200]!r}")
        usage = getattr(response, "usage", None)
        return Completion(message.content, getattr(usage, "prompt_tokens", 0) or 0,
                          getattr(usage, "completion_tokens", 0) or 0, choices[0].finish_reason or "")

    def _short(self, err) -> str:
        if isinstance(err, TimeoutError) and not str(err):
            return f"no complete answer within the total timeout of {self.timeout} s"
        return self.redactor.text(" ".join(str(err).split())[:300])

    def _classify(self, err) -> tuple[str, float | None]:
        e = self._openai
        if isinstance(err, (_BadResponse, json.JSONDecodeError, e.APIResponseValidationError)):
            return "bad-response", None
        if isinstance(err, (e.APITimeoutError, TimeoutError)):
            return "timeout", None
        if isinstance(err, e.APIConnectionError):
            return "connection-error", None
        if isinstance(err, e.APIStatusError):
            status, where = err.status_code, redact_url(self.endpoint)
            if status in (401, 403):
                raise FatalBackendError(f"{where} refused the API key (HTTP {status}); "
                                        "set it in the environment variable named by --api-key-env") from None
            if status == 404:
                raise FatalBackendError(f"{where} has no model {self.model!r} or no chat-completions "
                                        f"route (HTTP 404): {self._short(err)}") from None
            if status == 429:
                return "rate-limited", _retry_after(err.response)
            if status >= 500 or status in (408, 409):
                return f"http-{status}", _retry_after(err.response)
            return "bad-request", None
        return f"error-{type(err).__name__}", None  # unforeseen: recorded (redacted), not retried


def _split_query(endpoint: str, redactor: Redactor) -> tuple[str, dict]:
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    try:
        parts = urlsplit(endpoint)
    except ValueError as err:
        raise ValueError(f"--endpoint {redact_url(endpoint)}: not a URL ({redactor.text(err)})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--endpoint {redact_url(endpoint)}: expected an http(s) URL such as "
                         "http://localhost:8000/v1")
    return (urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            dict(parse_qsl(parts.query, keep_blank_values=True)))


class _BadResponse(ValueError):
    pass


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except (AttributeError, ValueError):
        return None  # an HTTP date or garbage: fall back to our own backoff


class TransformersBackend:
    """A local model through transformers' ``generate``. One request at a time: a single model on one
    device gains nothing from threads, so a lock serializes them. Tokens are counted exactly."""

    def __init__(self, path: str, *, max_new_tokens: int = 4096, temperature: float = 0.0, device: str | None = None,
                 dtype: str = "auto", seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..hub_cards.loading import resolve_model_path

        # A mistyped folder is reported as such, never looked up on the Hub; remote code never runs (or asks).
        self.path = path = resolve_model_path(path, "--local-model")
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"--local-model {path}: the tokenizer has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"local {self.path}"

    def check(self):
        return None  # loading the model already proved it works

    def complete(self, messages: list[dict], response_format: dict | None = None) -> Completion:
        import torch

        # response_format is not enforced locally: the plan is validated against the schema either way.
        with self._lock, torch.no_grad():
            inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True).to(self.model.device)
            torch.manual_seed(self.seed)
            sampling = dict(do_sample=True, temperature=self.temperature) if self.temperature > 0 else dict(
                do_sample=False)
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, pad_token_id=(
                self.tokenizer.pad_token_id or self.tokenizer.eos_token_id), **sampling)
        new = out[0, inputs["input_ids"].shape[1]:]
        finished = len(new) < self.max_new_tokens or int(new[-1]) == self.tokenizer.eos_token_id
        # Tags stay even where the curating model's tokenizer marks them special (a Multiverse model's does).
        return Completion(completion_text(self.tokenizer, new), int(inputs["input_ids"].shape[1]),
                          len(new), "stop" if finished else "length")
