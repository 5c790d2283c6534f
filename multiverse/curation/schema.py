"""The plan the LLM writes in stage (a), as a pydantic schema, plus the checks a schema cannot express.

The same schema is sent to servers that support ``response_format={"type": "json_schema"}`` and is
used to validate the answer, so what the model is told and what is checked cannot drift apart.
"""

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_PATHS = 16  # more outlines than this in one block is a planning mistake, not parallelism


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1, description="1, 2, ... in trace order")
    summary: str = Field(min_length=1, description="one sentence: what this step does")
    depends_on: list[int] = Field(default_factory=list, description="ids of earlier steps whose results it uses")


class PlanBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[int] = Field(min_length=2, max_length=MAX_PATHS,
                             description="ids of steps that do not depend on each other: one path each")
    combine: str = Field(min_length=1, description="one sentence: how the conclusion combines their results")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1)
    blocks: list[PlanBlock] = Field(description="parallel groups; empty when nothing is independent")

    @model_validator(mode="after")
    def _consistent(self):
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique, got {ids}")
        known = set()
        deps = {}
        for step in self.steps:
            bad = [d for d in step.depends_on if d not in known]
            if bad:
                raise ValueError(f"step {step.id} depends_on {bad}, which are not earlier steps")
            deps[step.id] = set(step.depends_on)
            known.add(step.id)
        closure = {}
        for step in self.steps:  # transitive dependencies, in trace order
            closure[step.id] = set().union(*(closure[d] | {d} for d in deps[step.id])) if deps[step.id] else set()
        used = set()
        for k, block in enumerate(self.blocks):
            missing = [s for s in block.steps if s not in known]
            if missing:
                raise ValueError(f"blocks[{k}] lists unknown steps {missing}")
            twice = used.intersection(block.steps)
            if twice or len(set(block.steps)) != len(block.steps):
                raise ValueError(f"blocks[{k}] reuses steps {sorted(twice) or block.steps}")
            used.update(block.steps)
            for s in block.steps:
                sibling = closure[s].intersection(block.steps)
                if sibling:
                    raise ValueError(f"blocks[{k}]: step {s} depends on {sorted(sibling)} in the same block, "
                                     "so they cannot run in parallel")
        return self


def plan_json_schema() -> dict:
    return Plan.model_json_schema()


class PlanError(ValueError):
    """The answer is not a valid plan. ``kind`` is "invalid-json" or "schema"."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def parse_plan(text: str) -> Plan:
    """The first JSON object in ``text`` (code fences and chatter around it are tolerated), validated."""
    start = text.find("{")
    if start < 0:
        raise PlanError("invalid-json", "the answer contains no JSON object (no '{')")
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as err:
        raise PlanError("invalid-json", f"the JSON object starting at char {start} does not parse: {err}") from None
    except RecursionError:
        raise PlanError("invalid-json", f"the JSON object starting at char {start} is nested too deeply") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"]) or "(top level)"
            lines.append(f"{where}: {e['msg']}")
        raise PlanError("schema", "the plan does not match the schema:\n" + "\n".join(lines)) from None
