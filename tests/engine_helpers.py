import copy

import torch

from multiverse.modeling_multiverse.generation_api import OPTION_DEFAULTS, parallel_generate


def run_engine(model, prompts, forced=None, max_new_tokens=256, **options):
    """parallel_generate on a model that is not a MultiverseForCausalLM (the table mock)."""
    gc = copy.deepcopy(getattr(model, "generation_config", None)) or __import__("transformers").GenerationConfig()
    gc.max_new_tokens, gc.return_dict_in_generate = max_new_tokens, True
    gc.do_sample = options.pop("do_sample", False)
    gc.eos_token_id = options.pop("eos_token_id", None)
    gc.output_logits = options.pop("output_logits", False)
    opts = dict(OPTION_DEFAULTS, forced_completions=forced, **options)
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    return parallel_generate(model, ids, mask, gc, opts)
