"""``multiverse generate``: one prompt, decoded in parallel (or autoregressively), with its branch tree."""

import json
import time
from pathlib import Path

import typer


def sequential_stats(completion: list[int], tag_ids: list[int], seconds: float) -> dict:
    """The statistics of an autoregressive decode in the parallel engine's shape: one branch, one token a step."""
    from ..modeling_multiverse.generation_api import tree_dict
    from ..modeling_multiverse.parser import parse
    from ..modeling_multiverse.tags import PARALLEL

    result = parse(completion, tag_ids)
    n = len(completion)
    return {"tokens": n, "steps": n, "parallelism": 1.0 if n else 0.0,
            "forks": sum(t == tag_ids[PARALLEL] for t in completion), "max_depth": result.max_depth,
            "events": {}, "repairs": [str(r) for r in result.repairs], "seconds": seconds,
            "critical_path": result.critical_path, "tree": tree_dict(result),
            "branches": [{"id": 0, "parent": None, "label": "root", "depth": 0, "start_step": 0, "end_step": n,
                          "tokens": n, "closed": True}]}


def generate(model: str = typer.Argument(..., help="A Multiverse model folder (or a plain Qwen2 one with the tags) "
                                                   "or Hub id"),
             prompt: str = typer.Option(..., "--prompt", "-p", help="The question (the user turn's {question})"),
             preset: str = typer.Option("plain", help="plain, multiverse-eval (the reference evaluation's prompt "
                                                      "and sampling) or multiverse-train (the training prompt)"),
             system: str = typer.Option(None, help="System message (replaces the preset's)"),
             user_template: str = typer.Option(None, help="User turn with {question} in it (replaces the preset's)"),
             max_new_tokens: int = typer.Option(None, min=1, help="Token budget [default: the preset's, else 1024]"),
             budget: str = typer.Option(None, help="total (every token of every branch counts) or critical-path "
                                                   "(the reference's: the budget bounds the decode steps) "
                                                   "[default: the preset's, else total]"),
             max_total_tokens: int = typer.Option(None, min=1, help="With --budget critical-path, a cap on all "
                                                                   "tokens [default: 4x the budget]"),
             temperature: float = typer.Option(None, min=0.0, help="0 decodes greedily [default: the preset's, "
                                                                   "else 0]"),
             top_p: float = typer.Option(None, min=0.0, max=1.0, help="[default: the preset's, else 1.0]"),
             top_k: int = typer.Option(None, min=1, help="Sample from the k likeliest tokens"),
             seed: int = typer.Option(0, help="Seed of the sampling"),
             max_branches: int = typer.Option(16, min=1),
             max_depth: int = typer.Option(4, min=0),
             sequential: bool = typer.Option(False, "--sequential", help="Decode autoregressively instead"),
             chat: bool = typer.Option(True, help="Wrap the prompt in the tokenizer's chat template"),
             device: str = typer.Option("cpu"),
             dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32"),
             trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                                    help="Run the model folder's own code (auto_map)"),
             cuda_graphs: bool = typer.Option(False, "--cuda-graphs",
                                              help="Replay parallel decode steps from CUDA graphs (GPU only)"),
             html: Path = typer.Option(None, help="Also draw the branches over time into this HTML file"),
             as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON at the end")):
    """Generate with parallel branches and show how the model split its work."""
    import torch

    from ..evaluation.options import decoding_settings
    from ..hub_cards.loading import load_multiverse
    from ..evaluation.prompts import prompt_ids
    from ..evaluation.runner import budget_kwargs
    from ..transcripts import completion_text
    from .tree_view import branch_tree, stats_line

    chosen, sampling, rule = decoding_settings(preset, system, user_template, temperature, top_p, top_k, seed, budget)
    if max_total_tokens is not None and (rule != "critical-path" or sequential):
        raise typer.BadParameter("caps the tokens of a parallel decode under --budget critical-path",
                                 param_hint="--max-total-tokens")
    budget_tokens = max_new_tokens or chosen.max_new_tokens or 1024
    lm, tok = load_multiverse(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    ids = torch.tensor([prompt_ids(tok, prompt, chosen, chat)], device=lm.device)
    mode = "autoregressive" if sequential else "parallel"
    limits = budget_kwargs(mode, budget_tokens, rule, max_total_tokens)
    kwargs = dict(limits, do_sample=sampling["temperature"] > 0, tokenizer=tok, max_branches=max_branches,
                  max_depth=max_depth, return_dict_in_generate=True, multiverse_parallel=not sequential,
                  pad_token_id=lm.generation_config.pad_token_id)
    if sampling["temperature"] > 0:
        kwargs.update({k: v for k, v in sampling.items() if k != "seed"})
        if sequential:
            torch.manual_seed(seed)  # HF sampling draws from the global generator
        else:
            kwargs["seed"] = seed
    if cuda_graphs:
        kwargs["cuda_graphs"] = True  # generate refuses it with --sequential or on a CPU, saying why
    start = time.perf_counter()
    try:
        out = lm.generate(ids, **kwargs)
    except ValueError as e:  # a setting generate refuses (e.g. --cuda-graphs on a CPU): a usage error
        raise typer.BadParameter(str(e)) from e
    from ..distributed import is_main_process

    if not is_main_process():  # under torchrun every rank generated the same; rank 0 alone prints and writes
        return
    completion = out.sequences[0, ids.shape[1]:].tolist()
    if sequential:
        eos = lm.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        completion = completion[:next((i + 1 for i, t in enumerate(completion) if t in eos), len(completion))]
        stats = sequential_stats(completion, list(lm.config.multiverse_tag_ids), time.perf_counter() - start)
    else:
        stats = out.multiverse[0]
    stats["budget"] = f"{rule} {budget_tokens}" + (f" (all tokens capped at {limits['max_new_tokens']})"
                                                   if "max_critical_path" in limits else "")
    text = completion_text(tok, completion)  # tags kept even where the tokenizer marks them special
    typer.echo(text)
    typer.echo("\n--- branches ---\n" + branch_tree(stats))
    typer.echo("--- stats ---\n" + stats_line(stats) + f" budget: {stats['budget']}")
    if html is not None:
        from .timeline import write_timeline

        write_timeline(html, stats, text, title=prompt)
        typer.echo(f"timeline: {html}")
    if as_json:
        typer.echo(json.dumps({k: v for k, v in stats.items() if k != "tree"}))


def register(app: typer.Typer):
    app.command()(generate)
