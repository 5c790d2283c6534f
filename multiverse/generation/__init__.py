"""Generation tools around ``MultiverseForCausalLM.generate``: the CLI, a tree view of the branches and an
HTML timeline. The engine itself lives in ``modeling_multiverse`` because it travels as remote code."""
