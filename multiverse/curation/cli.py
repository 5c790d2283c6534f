"""Commands: ``multiverse curate``, ``multiverse toy-data`` and ``multiverse validate``."""

import json
import os
from pathlib import Path

import typer

CHECKPOINT_NAME, REPORT_NAME, LOCK_NAME = "checkpoint.jsonl", "report.json", ".curate.lock"
# The defaults of the options that only an HTTP endpoint uses.
ENDPOINT_ONLY = {"--model": None, "--api-key-env": "OPENAI_API_KEY", "--timeout": 600.0, "--connect-timeout": 10.0,
                 "--retries": 4, "--backoff": 1.0, "--response-format": "none"}


def curate(
    input: Path = typer.Argument(..., help="JSONL file or a datasets folder (save_to_disk) of traces"),
    output: Path = typer.Argument(..., help="Folder for the dataset, card, report and checkpoint"),
    endpoint: str = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                            "(credentials in it are honoured and never printed)"),
    model: str = typer.Option(None, help="Model name at --endpoint"),
    local_model: str = typer.Option(None, help="A local transformers model folder or Hub id, instead of --endpoint"),
    api_key_env: str = typer.Option(ENDPOINT_ONLY["--api-key-env"],
                                    help="Environment variable holding the API key"),
    concurrency: int = typer.Option(4, help="Items in flight at once"),
    max_repairs: int = typer.Option(2, help="Repair rounds per item (K), for the plan and for the rewrite"),
    max_paths: int = typer.Option(8, help="Most paths the plan may put in one block"),
    timeout: float = typer.Option(ENDPOINT_ONLY["--timeout"],
                                  help="Seconds per HTTP request, whole (first byte, gaps and total)"),
    connect_timeout: float = typer.Option(ENDPOINT_ONLY["--connect-timeout"],
                                          help="Seconds to connect (at most --timeout)"),
    retries: int = typer.Option(ENDPOINT_ONLY["--retries"],
                                help="Retries per request on 429, 5xx, timeouts and malformed responses"),
    backoff: float = typer.Option(ENDPOINT_ONLY["--backoff"],
                                  help="First retry delay in seconds; doubles each retry, jittered"),
    temperature: float = typer.Option(0.0, help="Sampling temperature of the curating model"),
    max_tokens: int = typer.Option(None, help="Completion token limit per request (local default 4096)"),
    response_format: str = typer.Option(ENDPOINT_ONLY["--response-format"],
                                        help="How the plan's JSON is requested: none, json_object or json_schema "
                                             "(vLLM, SGLang and OpenAI enforce it)"),
    question_column: str = typer.Option(None, help="Question column (default: question, problem or prompt)"),
    trace_column: str = typer.Option(None, help="Trace column (default: s1K-1.1 deepseek_thinking_trajectory, "
                                                "thinking_trajectories, trace, ...)"),
    answer_column: str = typer.Option(None, help="Answer column (default: deepseek_attempt, attempt, answer, ...)"),
    id_column: str = typer.Option(None, help="Stable id column, unique per row (default: a hash of question and "
                                             "trace)"),
    split: str = typer.Option(None, help="Split of a saved DatasetDict"),
    limit: int = typer.Option(None, help="Only the first N items (N >= 1)"),
    system_prompt: Path = typer.Option(None, help="Replace the packaged system prompt (text file)"),
    plan_prompt: Path = typer.Option(None, help="Replace the plan prompt (Jinja: question, trace, schema, max_paths)"),
    rewrite_prompt: Path = typer.Option(None, help="Replace the rewrite prompt (Jinja: question, trace, plan)"),
    repair_prompt: Path = typer.Option(None, help="Replace the repair prompt (Jinja: errors)"),
    plan_repair_prompt: Path = typer.Option(None, help="Replace the plan-repair prompt (Jinja: errors)"),
    min_length_ratio: float = typer.Option(0.5, help="Rewrite/source length ratio lower bound"),
    max_length_ratio: float = typer.Option(2.0, help="Rewrite/source length ratio upper bound"),
    min_overlap: float = typer.Option(0.5, help="Share of the source's words the rewrite must keep"),
    drop_dependent: bool = typer.Option(False, help="Fail items whose paths use a sibling's result (else flag)"),
    mix: float = typer.Option(None, help="Curriculum: this share of examples also given autoregressively, first"),
    seed: int = typer.Option(0, help="Seed for --mix and the local model's sampling"),
    sft_system: str = typer.Option(None, help="System message to put in every SFT prompt"),
    prompt_suffixes: bool = typer.Option(True, help="End each user turn as the reference's training data does: "
                                                    "' Think step by step and in parallel before answering.' "
                                                    "(Multiverse) or ' Think step by step before answering.'"),
    checkpoint: Path = typer.Option(None, help=f"Checkpoint JSONL (default OUTPUT/{CHECKPOINT_NAME})"),
    retry_failed: bool = typer.Option(False, help="Run failed items of the checkpoint again (transient failures "
                                                  "such as timeouts always run again)"),
    skip_bad_lines: bool = typer.Option(False, help="Leave corrupt checkpoint lines in place and run their items "
                                                    "again, instead of stopping"),
    progress: bool = typer.Option(True, help="Show a progress bar"),
):
    """Convert sequential reasoning traces into Multiverse SFT data with an LLM: plan, rewrite, validate,
    repair, keep the source. Resumable: rerun the same command to continue.

    The server is checked first (GET /models). Per item: plan (JSON, the Plan schema), rewrite, validate, repair.

    Items whose plan has no parallel block are kept as sequential examples.

    Prompts, their variables, the plan schema and the records: multiverse/curation/README.md.
    """
    from .backends import FatalBackendError
    from .checkpoint import CheckpointInUse, lock_or_fail
    from .dataset_build import check_mix
    from .inputs import load_items
    from .pipeline import CurateConfig
    from .prompts import Prompts
    from .redaction import Redactor
    from .runner import print_report, run_curation
    from .source_checks import SourceBounds

    redactor = Redactor.for_endpoint(endpoint, os.environ.get(api_key_env))
    if (endpoint is None) == (local_model is None):
        raise typer.BadParameter("give either --endpoint (with --model) or --local-model")
    if endpoint is not None and not model:
        raise typer.BadParameter("--endpoint needs --model")
    if local_model is not None:  # HTTP settings mean nothing to a local model: refused, not ignored
        given = [name for name, value in (("--model", model), ("--api-key-env", api_key_env), ("--timeout", timeout),
                                          ("--connect-timeout", connect_timeout), ("--retries", retries),
                                          ("--backoff", backoff), ("--response-format", response_format))
                 if value != ENDPOINT_ONLY[name]]
        if given:
            raise typer.BadParameter(f"{', '.join(given)}: only for --endpoint, not --local-model")
    try:
        check_mix(mix)  # before any LLM call, not after all of them
        prompts = Prompts({"system": system_prompt, "plan": plan_prompt, "rewrite": rewrite_prompt,
                           "repair": repair_prompt, "plan_repair": plan_repair_prompt})
        config = CurateConfig(prompts=prompts, max_repairs=max_repairs, max_paths=max_paths,
                              bounds=SourceBounds(min_length_ratio, max_length_ratio, min_overlap),
                              response_format=response_format, drop_dependent=drop_dependent)
        items = load_items(input, question_column=question_column, trace_column=trace_column,
                           answer_column=answer_column, id_column=id_column, split=split, limit=limit)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(redactor.text(err)) from None
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint or output / CHECKPOINT_NAME
    try:
        lock = lock_or_fail(output / LOCK_NAME, f"output folder {output}")
    except CheckpointInUse as err:
        _fail(str(err))
    try:
        try:
            backend = _backend(endpoint, model, local_model, api_key_env, timeout, connect_timeout, retries,
                               backoff, temperature, max_tokens, seed)
        except (ValueError, FileNotFoundError, OSError) as err:
            raise typer.BadParameter(redactor.text(err)) from None
        try:
            report = run_curation(items, backend, config, checkpoint, concurrency=concurrency,
                                  retry_failed=retry_failed, progress=progress, skip_bad_lines=skip_bad_lines)
        except FatalBackendError as err:
            _fail(f"{redactor.text(err)}\nnothing was recorded for the unfinished items; rerun to continue")
        except (CheckpointInUse, ValueError) as err:  # a corrupt or foreign checkpoint: say where, never a trace
            _fail(redactor.text(err))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        report.update(input=str(input), prompts_fingerprint=prompts.fingerprint(), max_repairs=max_repairs)
        report = redactor.data(report)
        (output / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print_report(report)
        _build(output, checkpoint, report, config, mix, seed, sft_system, str(input), prompts, prompt_suffixes)
    finally:
        lock.release()


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _backend(endpoint, model, local_model, api_key_env, timeout, connect_timeout, retries, backoff, temperature,
             max_tokens, seed):
    from .backends import OpenAIBackend, TransformersBackend

    if local_model is not None:
        return TransformersBackend(local_model, max_new_tokens=max_tokens or 4096, temperature=temperature,
                                   seed=seed)
    return OpenAIBackend(endpoint, model, api_key_env=api_key_env, timeout=timeout, connect_timeout=connect_timeout,
                         retries=retries, backoff=backoff, max_backoff=max(backoff, 60.0), temperature=temperature,
                         max_tokens=max_tokens)


def _build(output: Path, checkpoint: Path, report: dict, config, mix, seed, sft_system, source, prompts,
           prompt_suffixes: bool = True):
    """The dataset and its card. ``report`` is redacted already: the card shows nothing it does not."""
    import datasets

    from .card import dataset_card
    from .checkpoint import Checkpoint
    from .dataset_build import KEPT, build_dataset

    with Checkpoint(checkpoint, skip_bad_lines=True) as ckpt:  # the run just read it: nothing new to report
        records = list(ckpt.records.values())
    if not any(r["outcome"] in KEPT for r in records):
        typer.echo("no finished examples yet: no dataset written", err=True)
        raise typer.Exit(1)
    datasets.disable_progress_bars()  # one line per split saved says nothing the summary does not
    dataset = build_dataset(records, mix=mix, seed=seed, system=sft_system, prompt_suffixes=prompt_suffixes)
    dataset.save_to_disk(str(output))
    card = dataset_card(dataset, report, output=str(output), source=source, backend=report["run"]["backend"],
                        prompts_fingerprint=prompts.fingerprint(), max_repairs=config.max_repairs,
                        bounds=config.bounds, mix=mix)
    card.save(output / "README.md")
    typer.echo(f"wrote {output}: " + ", ".join(f"{k} {len(v)}" for k, v in dataset.items()))


def toy_data(
    output: Path = typer.Argument(..., help="Folder for train.jsonl, test.jsonl and the SFT dataset sft/"),
    train: int = typer.Option(2000, help="Training problems"),
    test: int = typer.Option(200, help="Held-out problems (disjoint from training by construction)"),
    seed: int = typer.Option(0),
    steps: int = typer.Option(17, help="Steps every dial turns: the length of each path"),
    min_paths: int = typer.Option(2, help="Fewest dials (paths) per problem"),
    max_paths: int = typer.Option(4, help="Most dials (paths) per problem (4 at most: one ring of symbols each)"),
):
    """Write the built-in toy task: sequential and Multiverse traces, held-out problems, and an SFT dataset."""
    import datasets

    from ..jsonl import write_jsonl
    from .dataset_build import build_dataset
    from .toy_task import as_records, make_examples, make_test_problems

    try:
        kwargs = dict(steps=steps, min_paths=min_paths, max_paths=max_paths)
        train_rows, test_rows = make_examples(train, seed, **kwargs), make_test_problems(test, seed, **kwargs)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    output.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    for name, rows in (("train", train_rows), ("test", test_rows)):
        write_jsonl(output / f"{name}.jsonl", rows)
    # The toy task is evaluated with plain prompts (the quickstart's), so its user turn is the bare question.
    build_dataset(as_records(train_rows), seed=seed, prompt_suffixes=False).save_to_disk(str(output / "sft"))
    typer.echo(f"wrote {output}: train {len(train_rows)}, test {len(test_rows)}, sft/ dataset; "
               f"{_tokens_per_step(train_rows[:500]):.2f} completion tokens per decode step")


def _tokens_per_step(rows) -> float:
    """What parallel decoding gains on this data, measured with a tokenizer trained on it (as a from-scratch
    run would): generated tokens over the critical path."""
    from ..modeling_multiverse import tag_token_ids
    from ..modeling_multiverse.parser import parse
    from ..tokenization import train_tokenizer
    from .toy_task import as_chat

    tok = train_tokenizer([m["content"] for r in rows for m in as_chat(r)], vocab_size=300)
    tags = tag_token_ids(tok)
    results = [parse(tok.encode(as_chat(r)[1]["content"] + tok.eos_token), tags) for r in rows]
    return sum(r.length for r in results) / sum(r.critical_path for r in results)


def validate(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                       help="JSONL of traces, or text files of model output"),
    column: str = typer.Option("multiverse_trace", help="Trace column of JSONL files"),
):
    """Check traces with the strict validator. Says which rule each invalid trace or block breaks, and where,
    then one summary line; exits 1 when anything is invalid."""
    from ..jsonl import JsonlError, iter_jsonl
    from ..transcripts import read_transcript
    from .validate import check_blocks, validate_trace

    traces = invalid = blocks = broken = 0
    for path in files:
        if path.suffix == ".jsonl":
            try:
                rows = list(iter_jsonl(path))
            except JsonlError as err:
                raise typer.BadParameter(str(err)) from None
            for n, row in rows:
                trace = row.get(column)
                if not isinstance(trace, str):
                    raise typer.BadParameter(f"{path}:{n} has no text column {column!r}")
                violations = validate_trace(trace)
                traces, invalid = traces + 1, invalid + bool(violations)
                for v in violations:
                    typer.echo(f"{path}:{n}: {v}")
            continue
        for row in check_blocks(read_transcript(path).completion):
            verdict = "ok" if row["rule"] is None else f"{row['rule']} at char {row['index']}"
            blocks, broken = blocks + 1, broken + (row["rule"] is not None)
            typer.echo(f"{path}: block at char {row['start']} (depth {row['depth']}, "
                       f"{'complete' if row['complete'] else 'incomplete'}): {verdict}")
    parts = [f"{traces} JSONL traces, {invalid} invalid"] if traces or not blocks else []
    parts += [f"{blocks} blocks of model output, {broken} broken"] if blocks else []
    typer.echo(("invalid: " if invalid or broken else "ok: ") + "; ".join(parts) + f" ({len(files)} files)")
    raise typer.Exit(1 if invalid or broken else 0)


def register(app):
    app.command("curate")(curate)
    app.command("toy-data")(toy_data)
    app.command("validate")(validate)
