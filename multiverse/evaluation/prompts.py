"""The prompt formats Multiverse models were trained and evaluated with, shared by ``generate`` and ``eval``.

- ``multiverse-eval``: the reference evaluation that produced Multiverse-32B's published AIME transcripts
  (``tests/data/corpus``): a 4-line system prompt, the user turn ``"Solve the following math problem: " +
  question + "\\n"``, temperature 0.6, top-p 0.95 and 8000 new tokens bounding the critical path (the
  reference engine checks its budget against the position reached, not the tokens spent).
- ``multiverse-train``: the reference training data: no system message (so the chat template's default
  one, Qwen2.5's "You are Qwen, created by Alibaba Cloud. ...") and the user turn ``question + " Think
  step by step and in parallel before answering."``. Decoding settings are left to the user.
- ``plain``: the question as the user turn, no system message; the settings the commands default to.

``--system`` and ``--user-template`` (``{question}`` marks where the question goes) override a preset's.
"""

from dataclasses import dataclass, replace

QUESTION = "{question}"
EVAL_SYSTEM = (
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant specializing in solving math problems.\n"
    "When solving math problems, please show your reasoning process first, then provide the final answer in a "
    "fixed format:\n"
    '"the final answer is ..."\n'
    "Replace ... with the actual answer. Ensure this exact phrase is included at the end of your response."
)
# The reference's mixed training set ends each user turn with one of these (parallel / sequential examples).
PARALLEL_SUFFIX = " Think step by step and in parallel before answering."
SEQUENTIAL_SUFFIX = " Think step by step before answering."


@dataclass(frozen=True)
class Preset:
    name: str
    system: str | None = None  # None: no system turn, so the chat template's default applies
    user_template: str = QUESTION
    temperature: float | None = None  # None: the command's own default
    top_p: float | None = None
    max_new_tokens: int | None = None
    budget: str | None = None  # "critical-path" or "total"


PRESETS = {p.name: p for p in (
    Preset("plain"),
    Preset("multiverse-eval", system=EVAL_SYSTEM, user_template="Solve the following math problem: {question}\n",
           temperature=0.6, top_p=0.95, max_new_tokens=8000, budget="critical-path"),
    Preset("multiverse-train", user_template=QUESTION + PARALLEL_SUFFIX),
)}


def resolve_preset(name: str, system: str | None = None, user_template: str | None = None) -> Preset:
    """The preset ``name`` with ``system`` / ``user_template`` put in its place when given."""
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r} is not a preset; choose from {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if user_template is not None and QUESTION not in user_template:
        raise ValueError(f"--user-template {user_template!r} has no {QUESTION} to put the question in")
    return replace(preset, system=preset.system if system is None else system,
                   user_template=preset.user_template if user_template is None else user_template)


def user_turn(preset: Preset, question: str) -> str:
    # replace, not str.format: LaTeX braces in a template or a question are text.
    return preset.user_template.replace(QUESTION, question)


def render_prompt(tokenizer, question: str, preset: Preset, chat: bool = True) -> str:
    """The text the model is given: the chat template over the preset's turns; without a chat template (or
    ``chat=False``), the system message and the user turn separated by a blank line."""
    content = user_turn(preset, question)
    if not (chat and tokenizer.chat_template):
        return content if preset.system is None else f"{preset.system}\n\n{content}"
    messages = ([] if preset.system is None else [{"role": "system", "content": preset.system}])
    messages.append({"role": "user", "content": content})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(tokenizer, question: str, preset: Preset, chat: bool = True) -> list[int]:
    return tokenizer.encode(render_prompt(tokenizer, question, preset, chat), add_special_tokens=False)
