"""Benchmark evaluation: math-verify grading, parallel vs autoregressive decoding, budget sweeps."""

from .benchmark import Grade, Problem, answer_region, grade, load_benchmark
from .report import markdown_table, plot_accuracy, read_results, write_report
from .runner import MODES, evaluate, summarize

__all__ = ["MODES", "Grade", "Problem", "answer_region", "evaluate", "grade", "load_benchmark", "markdown_table",
           "plot_accuracy", "read_results", "summarize", "write_report"]
