"""LLM backends: any OpenAI-compatible chat-completions endpoint, or a local transformers model.

A backend has one method, ``complete(messages, response_format=None) -> Completion``. It raises
``BackendError`` (recorded as the item's failure, e.g. ``backend:timeout``) once its retries are spent,
and ``FatalBackendError`` for problems that no item can get past (bad key, unknown model): the run
stops at once instead of recording the same failure for every item.
"""

import json
import os
import random
import threading
import time
from dataclasses import dataclass


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


class OpenAIBackend:
    """Chat completions over HTTP. Retries 408/409/429/5xx, timeouts, dropped connections and
    malformed responses with jittered exponential backoff (honouring ``Retry-After``)."""

    def __init__(self, endpoint: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600.0,
                 retries: int = 4, backoff: float = 1.0, max_backoff: float = 60.0, temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = None):
        import openai

        for name, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if value < 0 or (name == "timeout" and value == 0):
                raise ValueError(f"{name}={value} must be positive")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        # Local vLLM/SGLang servers take any key, but the client insists on one.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        # The client's own retry loop cannot be tuned (fixed 0.5 s to 8 s), so it is off and ours runs.
        self.client = openai.OpenAI(base_url=endpoint, api_key=api_key, timeout=timeout, max_retries=0)
        self.endpoint, self.model, self.retries = endpoint, model, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.sampling = {"temperature": temperature}
        if max_tokens is not None:
            self.sampling["max_tokens"] = max_tokens
        if seed is not None:
            self.sampling["seed"] = seed
        self._errors = openai

    def describe(self) -> str:
        return f"{self.model} at {self.endpoint}"

    def complete(self, messages: list[dict], response_format: dict | None = None) -> Completion:
        extra = {"response_format": response_format} if response_format else {}
        for attempt in range(self.retries + 1):
            try:
                response = self.client.chat.completions.create(model=self.model, messages=messages,
                                                               **self.sampling, **extra)
                return self._completion(response)
            except Exception as err:  # noqa: BLE001 - classified below, unknown errors re-raised
                kind, retry_after = self._classify(err)
                if attempt == self.retries or kind in ("bad-request",):
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise BackendError(kind, f"{_short(err)}{tries}") from err
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

    def _classify(self, err) -> tuple[str, float | None]:
        e = self._errors
        if isinstance(err, (_BadResponse, json.JSONDecodeError, e.APIResponseValidationError)):
            return "bad-response", None
        if isinstance(err, e.APITimeoutError):
            return "timeout", None
        if isinstance(err, e.APIConnectionError):
            return "connection-error", None
        if isinstance(err, e.APIStatusError):
            status = err.status_code
            if status in (401, 403):
                raise FatalBackendError(f"{self.endpoint} refused the API key (HTTP {status}); "
                                        "set it in the environment variable named by --api-key-env") from err
            if status == 404:
                raise FatalBackendError(f"{self.endpoint} has no model {self.model!r} or no chat-completions "
                                        f"route (HTTP 404): {_short(err)}") from err
            if status == 429:
                return "rate-limited", _retry_after(err.response)
            if status >= 500 or status in (408, 409):
                return f"http-{status}", _retry_after(err.response)
            return "bad-request", None
        raise err


class _BadResponse(ValueError):
    pass


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except (AttributeError, ValueError):
        return None  # an HTTP date or garbage: fall back to our own backoff


def _short(err) -> str:
    return " ".join(str(err).split())[:300]


class TransformersBackend:
    """A local model through transformers' ``generate``. One request at a time: a single model on one
    device gains nothing from threads, so a lock serializes them. Tokens are counted exactly."""

    def __init__(self, path: str, *, max_new_tokens: int = 4096, temperature: float = 0.0, device: str | None = None,
                 dtype: str = "auto", seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"--local-model {path}: the tokenizer has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"local {self.path}"

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
        return Completion(self.tokenizer.decode(new, skip_special_tokens=True), int(inputs["input_ids"].shape[1]),
                          len(new), "stop" if finished else "length")
