"""What ``generate`` and ``eval`` share on the command line: the preset with its overrides."""

import typer


def decoding_settings(preset: str, system, user_template, temperature, top_p, top_k, seed, budget):
    """(preset with the overrides, sampling dict, budget rule); options left unset take the preset's values."""
    from .prompts import resolve_preset
    from .runner import BUDGETS

    try:
        chosen = resolve_preset(preset, system, user_template)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    rule = budget or chosen.budget or "total"
    if rule not in BUDGETS:
        raise typer.BadParameter(f"{rule!r}; choose from {', '.join(BUDGETS)}", param_hint="--budget")
    temperature = chosen.temperature if temperature is None else temperature
    sampling = dict(temperature=temperature or 0.0, seed=seed)
    if temperature:
        sampling.update(top_p=chosen.top_p if top_p is None else top_p, top_k=top_k)
    elif top_p is not None or top_k is not None:
        raise typer.BadParameter("top-p and top-k shape sampling; greedy decoding (temperature 0) ignores them, so "
                                 "set --temperature too", param_hint="--top-p/--top-k")
    sampling = {k: v for k, v in sampling.items() if v is not None}
    return chosen, sampling, rule
