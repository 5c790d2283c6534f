"""Keep credentials out of everything curation prints or writes.

An endpoint can carry secrets (``http://user:pw@host/v1``, ``?api_key=...``) and so can the API key's
environment variable. A ``Redactor`` knows them all and replaces each with ``***`` in any text; it is
applied at every boundary where text leaves the process: the backend's description and error messages
(which reach the checkpoint, ``report.json``, the dataset card and stderr), the CLI's error lines, and
the log records of the HTTP libraries.
"""

import base64
import logging
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET = 3  # shorter values ("v1", "0") would mask ordinary text and hide nothing worth hiding
LIBRARY_LOGGERS = ("httpx2", "httpx", "httpcore2", "httpcore", "openai", "openai._base_client")


def _split(url: str):
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host: nothing can be parsed, so nothing is shown
        return None


def url_secrets(url: str) -> list[str]:
    """The user name, password and every query and fragment value of ``url``."""
    parts = _split(url)
    if parts is None:
        return [url]
    found = [parts.username, parts.password]
    found += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    found += [v for _, v in parse_qsl(parts.fragment, keep_blank_values=True)] or [parts.fragment]
    return [s for s in found if s]


def redact_url(url: str) -> str:
    """``url`` with its user info and every query value replaced by ``***`` (parameter names stay)."""
    parts = _split(url)
    if parts is None:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


class Redactor:
    def __init__(self, secrets=()):
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)

    @classmethod
    def for_endpoint(cls, endpoint: str | None, api_key: str | None = None) -> "Redactor":
        from urllib.parse import quote, unquote

        found = url_secrets(endpoint) if endpoint else []
        # Both spellings: the URL shows them percent-encoded, a library may print them decoded.
        found += [unquote(s) for s in found] + [quote(s, safe="") for s in found]
        parts = _split(endpoint) if endpoint else None
        if parts is not None and (parts.username or parts.password):  # as a Basic Authorization header
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            found.append(base64.b64encode(pair.encode()).decode())
        return cls(found + ([api_key] if api_key and api_key != "EMPTY" else []))

    def text(self, value) -> str:
        text = str(value)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def data(self, value):
        """A JSON-like value with every string redacted (a report before it is written)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def install_log_filter(self):
        """Redact the HTTP libraries' log records (httpx logs every request URL at INFO)."""
        if not self.secrets:
            return
        log_filter = _LogFilter(self)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _LogFilter) and f.redactor.secrets == self.secrets for f in logger.filters):
                logger.addFilter(log_filter)  # once per set of secrets, however many backends are made


class _LogFilter(logging.Filter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
