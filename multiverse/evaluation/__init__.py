"""Benchmark evaluation: math-verify grading, parallel vs autoregressive decoding, budgets, K samples, resumable."""

from .benchmark import Problem, load_benchmark
from .grading import Grade, answer_region, grade, grade_choice, grade_problem
from .prompts import PRESETS, Preset, render_prompt, resolve_preset
from .records import RecordLog
from .report import markdown_table, plot_accuracy, read_results, write_report

# The decoding side imports torch: it loads on first use, so `multiverse --help` and `multiverse grade` stay light.
_LAZY = {"BUDGETS": "runner", "MODES": "runner", "evaluate": "runner", "summarize": "summary"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["BUDGETS", "MODES", "PRESETS", "Grade", "Preset", "Problem", "RecordLog", "answer_region", "evaluate",
           "grade", "grade_choice", "grade_problem", "load_benchmark", "markdown_table", "plot_accuracy",
           "read_results", "render_prompt", "resolve_preset", "summarize", "write_report"]
