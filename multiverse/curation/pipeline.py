"""The stages for one item: plan -> rewrite -> validate -> repair (at most K rounds) -> keep-the-source.

``curate_item`` never raises for a bad answer, a backend failure or any other error of one item: it
returns a record whose ``outcome`` is "ok", "sequential" (the plan found nothing independent: the
source is kept as a sequential example) or "failed" with a ``reason`` such as ``plan:schema``,
``rewrite:stray-tag``, ``source:answer-lost``, ``backend:timeout`` or ``error:RecursionError``. Only
``FatalBackendError`` escapes, to stop the run.
"""

import json
import time
from dataclasses import dataclass, field

from ..modeling_multiverse.parser import parse
from ..modeling_multiverse.tags import TAG_PATTERN
from .backends import BackendError, FatalBackendError
from .independence import check_independence
from .inputs import Item
from .prompts import Prompts
from .schema import MAX_PATHS, PlanError, parse_plan, plan_json_schema
from .source_checks import SourceBounds, source_checks
from .validate import extract_trace, validate_trace

RESPONSE_FORMATS = ("none", "json_object", "json_schema")


@dataclass
class CurateConfig:
    prompts: Prompts = field(default_factory=Prompts)
    max_repairs: int = 2
    max_paths: int = 8
    bounds: SourceBounds = field(default_factory=SourceBounds)
    response_format: str = "none"  # how the plan's JSON is requested; it is validated either way
    drop_dependent: bool = False  # paths that use a sibling's result fail the item instead of a flag

    def __post_init__(self):
        if self.max_repairs < 0:
            raise ValueError(f"max_repairs={self.max_repairs} must be >= 0")
        if not 2 <= self.max_paths <= MAX_PATHS:
            raise ValueError(f"max_paths={self.max_paths} must lie in [2, {MAX_PATHS}]")
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format={self.response_format!r}; choose one of {RESPONSE_FORMATS}")

    def plan_format(self) -> dict | None:
        if self.response_format == "json_object":
            return {"type": "json_object"}
        if self.response_format == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "plan", "schema": plan_json_schema()}}
        return None


class _Failure(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class _Session:
    """One item's calls, with the token and call counts every record reports."""

    def __init__(self, backend, config: CurateConfig):
        self.backend, self.config = backend, config
        self.calls = self.prompt_tokens = self.completion_tokens = 0

    def ask(self, messages, response_format=None) -> str:
        self.calls += 1
        try:
            out = self.backend.complete(messages, response_format=response_format)
        except BackendError as err:
            raise _Failure(f"backend:{err.kind}", str(err)) from None
        self.prompt_tokens += out.prompt_tokens
        self.completion_tokens += out.completion_tokens
        return out.text


def curate_item(item: Item, backend, config: CurateConfig) -> dict:
    started = time.monotonic()
    session = _Session(backend, config)
    record = {"id": item.id, "index": item.index, "question": item.question, "answer": item.answer,
              "source_trace": item.trace, "outcome": "failed", "reason": None, "detail": "", "plan": None,
              "multiverse_trace": None, "repairs": 0, "errors": [], "checks": None, "independence": [], "stats": None}
    try:
        plan = _plan(item, session, config, record)
        record["plan"] = plan.model_dump()
        if not plan.blocks:
            _keep_sequential(item, record)
            return _finish(record, session, started)
        trace = _rewrite(item, plan, session, config, record)
        result = parse(trace)
        record.update(outcome="ok", multiverse_trace=trace, stats={
            "blocks": len(result.all_blocks), "paths": sum(len(b.paths) for b in result.all_blocks),
            "max_depth": result.max_depth,
            # in characters: no tokenizer is assumed here; tokens per step differ (digits, tags are 1 token)
            "ideal_parallelism_chars": round(result.ideal_parallelism, 4)})
    except _Failure as failure:
        record.update(reason=failure.reason, detail=failure.detail)
    except FatalBackendError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever one item raises (a RecursionError on a deeply
        # nested answer, a bug) is that item's failure: recorded, so the run goes on and a rerun skips it
        record.update(outcome="failed", reason=f"error:{type(err).__name__}",
                      detail=" ".join(str(err).split())[:300])
    return _finish(record, session, started)


def _finish(record: dict, session: "_Session", started: float) -> dict:
    record.update(calls=session.calls, tokens={"prompt": session.prompt_tokens,
                                               "completion": session.completion_tokens},
                  seconds=round(time.monotonic() - started, 3))
    return record


def _keep_sequential(item: Item, record: dict):
    """Nothing to parallelize: the source itself is the example (as in the paper's mixed data)."""
    tag = TAG_PATTERN.search(item.trace)
    if tag:
        raise _Failure("source:tag-in-trace", f"the source trace contains the tag {tag.group()} at char "
                                              f"{tag.start()}, so it cannot be a sequential example")
    record.update(outcome="sequential", detail="the plan found no independent steps: kept as a sequential example")


def _plan(item: Item, session: _Session, config: CurateConfig, record: dict):
    prompts = config.prompts
    schema = json.dumps(plan_json_schema())  # compact: the schema is sent with every plan request
    messages = prompts.messages("plan", question=item.question, trace=item.trace, schema=schema,
                                max_paths=config.max_paths)
    for attempt in range(config.max_repairs + 1):
        answer = session.ask(messages, config.plan_format())
        try:
            plan = parse_plan(answer)
            too_wide = [k for k, b in enumerate(plan.blocks) if len(b.steps) > config.max_paths]
            if too_wide:
                raise PlanError("schema", f"blocks {too_wide} have more than {config.max_paths} steps")
            return plan
        except PlanError as err:
            record["errors"].append({"stage": "plan", "attempt": attempt, "rule": err.kind, "message": str(err)})
            if attempt == config.max_repairs:
                raise _Failure(f"plan:{err.kind}", str(err)) from None
            messages = messages[:2] + [{"role": "assistant", "content": answer},
                                       {"role": "user", "content": prompts.render("plan_repair", errors=[str(err)])}]


def _rewrite(item: Item, plan, session: _Session, config: CurateConfig, record: dict) -> str:
    prompts = config.prompts
    messages = prompts.messages("rewrite", question=item.question, trace=item.trace,
                                plan=json.dumps(plan.model_dump(), indent=1, ensure_ascii=False))
    for attempt in range(config.max_repairs + 1):
        answer = session.ask(messages)
        trace = extract_trace(answer)
        problems, reason = _problems(item, trace, config, record)
        if not problems:
            return trace
        for rule, message in problems:
            record["errors"].append({"stage": "rewrite", "attempt": attempt, "rule": rule, "message": message})
        if attempt == config.max_repairs:
            raise _Failure(reason, problems[0][1])
        record["repairs"] += 1
        # Only the latest attempt goes back: the context stays bounded however many rounds there are.
        messages = messages[:2] + [{"role": "assistant", "content": trace},
                                   {"role": "user", "content": prompts.render(
                                       "repair", errors=[m for _, m in problems])}]


def _problems(item: Item, trace: str, config: CurateConfig, record: dict) -> tuple[list, str]:
    """(rule, message) pairs for everything wrong with ``trace``, and the failure reason they imply."""
    violations = validate_trace(trace)
    if violations:
        return [(v.rule, str(v)) for v in violations], f"rewrite:{violations[0].rule}"
    checks, failed = source_checks(item.trace, trace, item.answer, config.bounds)
    record["checks"] = checks
    if failed:
        bounds = config.bounds
        why = {"answer-lost": f"the rewrite no longer states the final answer ({item.answer.strip()[:200]})",
               "length-ratio": f"the rewrite is {checks['length_ratio']}x the source's length; keep it within "
                               f"{bounds.min_length_ratio}x to {bounds.max_length_ratio}x by keeping all content",
               "low-overlap": f"the rewrite keeps only {checks['overlap']:.0%} of the source's words (at least "
                              f"{bounds.min_overlap:.0%} needed); keep the original wording"}[failed]
        return [(failed, why)], f"source:{failed}"
    flags = check_independence(trace, item.question)
    record["independence"] = flags
    if flags and config.drop_dependent:
        return ([("sibling-reference", f"path {f['path']} of block {f['block'] + 1} uses a sibling's result: "
                  f"{f['evidence']}") for f in flags], "independence:sibling-reference")
    return [], ""
