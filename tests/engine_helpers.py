import copy

import torch
from transformers import GenerationConfig

from multiverse.modeling_multiverse.generation_api import OPTION_DEFAULTS, parallel_generate

GENERATION_FIELDS = set(GenerationConfig().to_dict())


def run_engine(model, prompts, forced=None, max_new_tokens=256, logits_processor=None, stopping_criteria=None,
               streamer=None, **options):
    """parallel_generate on a model that is not a MultiverseForCausalLM (the table mock).

    Keyword arguments that name a ``GenerationConfig`` field set it; the others are Multiverse options."""
    gc = copy.deepcopy(getattr(model, "generation_config", None)) or GenerationConfig()
    gc.max_new_tokens, gc.return_dict_in_generate = max_new_tokens, True
    gc.do_sample = options.pop("do_sample", False)
    gc.eos_token_id = options.pop("eos_token_id", None)
    gc.output_logits = options.pop("output_logits", False)
    for name in [k for k in options if k in GENERATION_FIELDS]:
        setattr(gc, name, options.pop(name))
    opts = dict(OPTION_DEFAULTS, forced_completions=forced, **options)
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p)
        mask[b, width - len(p):] = 1
    return parallel_generate(model, ids, mask, gc, opts, logits_processor=logits_processor,
                             stopping_criteria=stopping_criteria, streamer=streamer)
