"""The curation prompts: Jinja templates shipped as package data, each replaceable by a file.

Names: ``system`` (plain text), ``plan``, ``rewrite``, ``repair``, ``plan_repair`` (Jinja).
Variables: plan gets question, trace, schema, max_paths; rewrite gets question, trace, plan;
repair gets errors (list of str); plan_repair gets errors.
"""

import json
from importlib import resources
from pathlib import Path

import jinja2

PROMPT_NAMES = ("system", "plan", "rewrite", "repair", "plan_repair")
_FILES = {"system": "system.txt", "plan": "plan.jinja", "rewrite": "rewrite.jinja", "repair": "repair.jinja",
          "plan_repair": "plan_repair.jinja"}


class Prompts:
    def __init__(self, overrides: dict | None = None):
        """``overrides`` maps a prompt name to a file that replaces the packaged one."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = set(overrides) - set(PROMPT_NAMES)
        if unknown:
            raise ValueError(f"unknown prompt names {sorted(unknown)}; choose from {PROMPT_NAMES}")
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        self.sources, self.templates = {}, {}
        for name in PROMPT_NAMES:
            if name in overrides:
                path = Path(overrides[name])
                if not path.is_file():
                    raise FileNotFoundError(f"--{name.replace('_', '-')}-prompt {path}: no such file")
                text = path.read_text(encoding="utf-8")
            else:
                text = resources.files(__package__).joinpath("prompts", _FILES[name]).read_text(encoding="utf-8")
            self.sources[name] = text
            try:
                self.templates[name] = env.from_string(text)
            except jinja2.TemplateSyntaxError as err:
                raise ValueError(f"prompt {name!r} line {err.lineno}: {err.message}") from None

    @property
    def system(self) -> str:
        return self.sources["system"].strip()

    def render(self, name: str, **values) -> str:
        try:
            return self.templates[name].render(**values)
        except jinja2.UndefinedError as err:
            raise ValueError(f"prompt {name!r}: {err.message}; available: {sorted(values)}") from None

    def messages(self, name: str, **values) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.render(name, **values)}]

    def fingerprint(self) -> str:
        """A short hash of all prompt texts, recorded in the report and the dataset card."""
        import hashlib

        return hashlib.sha256(json.dumps(self.sources, sort_keys=True).encode()).hexdigest()[:12]
