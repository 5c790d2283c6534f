"""Evaluation outputs: a markdown table, a JSON file with every record, and a PNG of accuracy vs budget."""

import json
from pathlib import Path

COLUMNS = (("mode", "mode", "{}"), ("max_new_tokens", "budget", "{}"), ("accuracy", "accuracy", "{:.1%}"),
           ("correct", "correct", "{}"), ("problems", "n", "{}"), ("samples", "K", "{}"),
           ("stderr", "± stderr", "{:.1%}"), ("pass_at_k", "pass@K", "{:.1%}"), ("answered", "answered", "{:.0%}"),
           ("trigger_rate", "forked", "{:.0%}"), ("degree", "tokens / critical path", "{:.2f}"),
           ("mean_critical_path", "mean critical path", "{:.1f}"), ("mean_tokens", "mean tokens", "{:.1f}"),
           ("mean_steps", "mean decode steps", "{:.1f}"), ("parallelism", "tokens / step", "{:.2f}"),
           ("forks", "forks / completion", "{:.2f}"), ("seconds", "seconds", "{:.1f}"))
COLORS = {"parallel": "#1f77b4", "autoregressive": "#d62728"}
# Different markers and dashes keep both curves visible where they coincide (e.g. both at 0%).
STYLES = {"parallel": dict(marker="o", markersize=8, linestyle="-"),
          "autoregressive": dict(marker="s", markersize=5, linestyle="--")}
RESULTS_JSON, TABLE_MD, PLOT_PNG = "results.json", "results.md", "accuracy_vs_budget.png"


def markdown_table(rows: list[dict]) -> str:
    """The summary rows as a markdown table (rows from older results lack the newer columns: shown as -)."""
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "mode" else "---:" for key, _, _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS) + " |"
            for row in rows]
    return "\n".join([head, rule, *body])


def plot_accuracy(rows: list[dict], path: str | Path, title: str) -> Path:
    """Accuracy against the token budget, and against the decode steps actually spent.

    The second panel is the paper's efficiency argument: at equal sequential steps (latency), parallel
    decoding has spent more tokens, so its points sit further left for the same accuracy.
    """
    # Figure + the Agg canvas directly: no pyplot, so no global backend and no display is ever touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    budgets = sorted({r["max_new_tokens"] for r in rows})
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["max_new_tokens"])
        style = dict(STYLES.get(mode, {}), color=COLORS.get(mode), label=mode)
        left.plot([r["max_new_tokens"] for r in rs], [100 * r["accuracy"] for r in rs], **style)
        right.plot([r["mean_steps"] for r in rs], [100 * r["accuracy"] for r in rs], **style)
        for r in rs:
            right.annotate(str(r["max_new_tokens"]), (r["mean_steps"], 100 * r["accuracy"]), fontsize=7,
                           textcoords="offset points", xytext=(4, 4), color=COLORS.get(mode))
    if len(budgets) > 1 and budgets[-1] / budgets[0] >= 8:
        left.set_xscale("log", base=2)
    left.set_xticks(budgets, [str(b) for b in budgets])
    left.set_xlabel("max_new_tokens (budget)")
    right.set_xlabel("mean decode steps (labels: budget)")
    for ax in (left, right):
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    left.set_title("accuracy vs token budget", fontsize=10)
    right.set_title("accuracy vs sequential decode steps", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_report(records: list[dict], rows: list[dict], out_dir: str | Path, *, benchmark: str, model: str,
                 settings: dict) -> dict:
    """Write results.json, results.md and accuracy_vs_budget.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{benchmark}: {model}"
    table = markdown_table(rows)
    rules = sorted({r.get("budget", "total") for r in rows})
    (out / TABLE_MD).write_text(
        f"# {title}\n\n{table}\n\naccuracy is avg@K (the mean over problems of the share of correct samples), with "
        f"its standard error over problems; pass@K counts problems with a correct sample. Budget rule: "
        f"{', '.join(rules)} (critical-path: the budget bounds the parallel decoder's steps, as the reference "
        f"engine's does). Both modes decode the same model under the same mask.\n", encoding="utf-8")
    payload = dict(benchmark=benchmark, model=model, settings=settings, summary=rows, records=records)
    (out / RESULTS_JSON).write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_accuracy(rows, out / PLOT_PNG, title)
    return {"table": out / TABLE_MD, "json": out / RESULTS_JSON, "plot": out / PLOT_PNG}


def read_results(path: str | Path) -> dict:
    """A results.json (or the folder holding one) written by ``multiverse eval``."""
    path = Path(path)
    path = path / RESULTS_JSON if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation results at {path}; "
                                "run `multiverse eval MODEL --benchmark FILE --out DIR`")
    data = json.loads(path.read_text(encoding="utf-8"))
    if "summary" not in data or "benchmark" not in data:
        raise ValueError(f"{path} is not a `multiverse eval` results file (no 'summary'/'benchmark')")
    return data
