"""``multiverse generate MODEL --prompt TEXT``: the answer, the tree of branches and the statistics."""

import json
from pathlib import Path

import typer


def generate(model: str = typer.Argument(..., help="A Multiverse model folder or Hub id"),
             prompt: str = typer.Option(..., "--prompt", "-p", help="The user message"),
             max_new_tokens: int = typer.Option(1024, help="Token budget over all branches"),
             temperature: float = typer.Option(0.0, help="0 decodes greedily"),
             top_p: float = typer.Option(1.0),
             max_branches: int = typer.Option(16),
             max_depth: int = typer.Option(4),
             sequential: bool = typer.Option(False, "--sequential", help="Decode autoregressively instead"),
             chat: bool = typer.Option(True, help="Wrap the prompt in the tokenizer's chat template"),
             device: str = typer.Option("cpu"),
             cuda_graphs: bool = typer.Option(False, "--cuda-graphs",
                                              help="Replay parallel decode steps from CUDA graphs (GPU only)"),
             html: Path = typer.Option(None, help="Also draw the branches over time into this HTML file"),
             as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON at the end")):
    """Generate with parallel branches and show how the model split its work."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .tree_view import branch_tree, stats_line

    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=True).to(device).eval()
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   tokenize=False) if chat and tok.chat_template else prompt
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)], device=device)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0, top_p=top_p, tokenizer=tok,
                  max_branches=max_branches, max_depth=max_depth, return_dict_in_generate=True,
                  multiverse_parallel=not sequential, pad_token_id=tok.pad_token_id)
    if cuda_graphs:
        kwargs["cuda_graphs"] = True  # generate refuses it with --sequential or on a CPU, saying why
    if temperature > 0:
        kwargs["temperature"] = temperature
    try:
        out = lm.generate(ids, **kwargs)
    except ValueError as e:  # a setting generate refuses (e.g. --cuda-graphs on a CPU): a usage error
        raise typer.BadParameter(str(e)) from e
    typer.echo(tok.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=False))
    if sequential:
        return
    stats = out.multiverse[0]
    typer.echo("\n--- branches ---\n" + branch_tree(stats))
    typer.echo("--- stats ---\n" + stats_line(stats))
    if html is not None:
        from .timeline import write_timeline

        write_timeline(html, stats, tok.decode(out.sequences[0, ids.shape[1]:]), title=prompt)
        typer.echo(f"timeline: {html}")
    if as_json:
        typer.echo(json.dumps({k: v for k, v in stats.items() if k != "tree"}))


def register(app: typer.Typer):
    app.command()(generate)
