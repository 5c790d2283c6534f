"""``multiverse eval`` (a benchmark, K samples, both decoding modes, resumable) and ``multiverse grade``."""

import json
import re
from pathlib import Path

import typer
from typer.core import TyperCommand

from .options import decoding_settings

NUMBERS = re.compile(r"^\d+(,\d*)*$")


class SpaceSeparatedBudgets(TyperCommand):
    """``--max-new-tokens 4096 8192 16384`` as the README writes it: the numbers after the option are budgets."""

    def parse_args(self, ctx, args):
        out, i = [], 0
        while i < len(args):
            arg, i = args[i], i + 1
            if arg == "--max-new-tokens" and i < len(args):
                values, i = [args[i]], i + 1
            elif arg.startswith("--max-new-tokens="):
                values = [arg.split("=", 1)[1]]
            else:
                out.append(arg)
                continue
            while i < len(args) and NUMBERS.match(args[i]):
                values.append(args[i])
                i += 1
            out += ["--max-new-tokens", ",".join(values)]
        return super().parse_args(ctx, out)


def _budgets(values: list[str]) -> list[int]:
    try:
        budgets = [int(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{values}: give integers, e.g. --max-new-tokens 256 1024 or 256,1024",
                                 param_hint="--max-new-tokens") from None
    if not budgets or min(budgets) < 1:
        raise typer.BadParameter(f"{values}: every budget must be a positive integer", param_hint="--max-new-tokens")
    return sorted(set(budgets))


def evaluate(model: str = typer.Argument(..., help="A Multiverse model folder (or a plain Qwen2 one with the tags) "
                                                   "or Hub id"),
             benchmark: str = typer.Option(..., help="JSONL/JSON/Parquet/CSV file with problem and answer, or "
                                                     "aime24, aime25, math500, gpqa-diamond, or a datasets id"),
             max_new_tokens: list[str] = typer.Option(None, help="Token budgets: 256 1024, 256,1024 or repeat the "
                                                                 "option [default: the preset's, else 1024]"),
             modes: str = typer.Option("parallel,autoregressive", help="parallel, autoregressive or both"),
             out: Path = typer.Option(Path("eval_results"), help="Folder for records.jsonl (resumable), results.md, "
                                                                 "results.json and the PNG"),
             limit: int = typer.Option(None, min=1, help="Only the first N problems"),
             batch_size: int = typer.Option(8, min=1, help="Prompts decoding at once (continuous batching: a finished "
                                            "one's row takes the next; both modes)"),
             num_samples: int = typer.Option(1, min=1, help="Completions per problem (K): avg@K and pass@K"),
             preset: str = typer.Option("plain", help="Prompt and decoding preset: plain, multiverse-eval (the "
                                                      "reference evaluation), multiverse-train (the training prompt)"),
             system: str = typer.Option(None, help="System message (replaces the preset's)"),
             user_template: str = typer.Option(None, help="User turn with {question} in it (replaces the preset's)"),
             chat: bool = typer.Option(True, help="Wrap the prompt in the tokenizer's chat template"),
             temperature: float = typer.Option(None, min=0.0, help="0 decodes greedily [default: the preset's, else 0]"),
             top_p: float = typer.Option(None, min=0.0, max=1.0, help="[default: the preset's, else 1.0]"),
             top_k: int = typer.Option(None, min=1, help="Sample from the k likeliest tokens"),
             seed: int = typer.Option(0, help="Seed of the sampling (each problem and sample gets its own)"),
             budget: str = typer.Option(None, help="total (every token counts) or critical-path (the reference's: "
                                                   "the budget bounds the decode steps) [default: the preset's, "
                                                   "else total]"),
             max_total_tokens: int = typer.Option(None, min=1, help="With --budget critical-path, a cap on all "
                                                                   "tokens [default: 4x the budget]"),
             max_branches: int = typer.Option(16, min=1), max_depth: int = typer.Option(4, min=0),
             device: str = typer.Option("cpu"), dtype: str = typer.Option("auto"),
             trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                    help="Run the model folder's own code (auto_map)"),
             progress: bool = typer.Option(True, help="Show a progress bar")):
    """Grade a benchmark: Multiverse vs autoregressive decoding of the same model, per budget, K samples each.

    Every finished completion is appended to OUT/records.jsonl at once; rerunning the same command skips them.
    """
    from .benchmark import load_benchmark
    from .records import RecordLog
    from .report import markdown_table, write_report
    from .runner import MODES
    from .runner import evaluate as run_eval
    from .summary import summarize
    from ..distributed import is_main_process, rank_private_dir
    from ..hub_cards.loading import load_multiverse

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list or set(mode_list) - set(MODES):
        raise typer.BadParameter(f"{modes!r}; choose from {','.join(MODES)}", param_hint="--modes")
    chosen, sampling, rule = decoding_settings(preset, system, user_template, temperature, top_p, top_k, seed, budget)
    budgets = _budgets(max_new_tokens or [str(chosen.max_new_tokens or 1024)])
    if max_total_tokens is not None and rule != "critical-path":
        raise typer.BadParameter("caps the tokens of --budget critical-path; with --budget total the budget "
                                 "itself counts every token", param_hint="--max-total-tokens")
    settings = dict(model=str(model), benchmark=str(benchmark), preset=preset, system=chosen.system,
                    user_template=chosen.user_template, chat=chat, budget=rule, max_total_tokens=max_total_tokens,
                    max_branches=max_branches, max_depth=max_depth, batch_size=batch_size, dtype=dtype, device=device,
                    **sampling)
    # A user's mistake (bad file, bad path, untrusted remote code) is printed as one line by multiverse.cli.
    problems = load_benchmark(benchmark, limit)
    lm, tok = load_multiverse(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    # Under torchrun, ranks other than 0 log into a private copy: all resume alike, rank 0 alone writes `out`.
    log = RecordLog(rank_private_dir(out, keep=("records.jsonl",)), settings)
    try:
        records = run_eval(lm, tok, problems, budgets, mode_list, batch_size=batch_size, preset=chosen, chat=chat,
                           options=dict(max_branches=max_branches, max_depth=max_depth), sampling=sampling,
                           num_samples=num_samples, budget_rule=rule, max_total_tokens=max_total_tokens,
                           progress=progress and is_main_process(), log=log)
    finally:
        log.close()
    if not is_main_process():  # every rank made the same records; rank 0 alone reports
        return
    rows = summarize(records)
    settings.update(budgets=budgets, modes=mode_list, num_samples=num_samples, problems=len(problems),
                    greedy=not sampling.get("temperature"))
    name = Path(benchmark).stem if Path(benchmark).suffix else benchmark
    paths = write_report(records, rows, out, benchmark=name, model=str(model), settings=settings)
    typer.echo(markdown_table(rows))
    typer.echo(f"wrote {paths['table']}, {paths['json']}, {paths['plot']} ({log.path} holds every completion)")
    typer.echo(json.dumps({"benchmark": name, "summary": rows}))


def register(app: typer.Typer):
    from .grade_cli import grade

    app.command("eval", cls=SpaceSeparatedBudgets)(evaluate)
    app.command("grade")(grade)
