"""The autoregressive baseline: the same data in sequential form, the same config, a plain causal model.

Every completion loses its parallel structure (``data.to_sequential_text``: goals, path labels and the ten
tags), or is taken from ``--sequential_column`` when the dataset keeps a sequential text per example. The
output of ``multiverse curate`` also has an ``autoregressive`` split, already stripped by the same rule:
``--dataset_train_split autoregressive`` trains on it as it is. The checkpoint is trained as it is (no tags
added) with TRL's own collator and the same loss option as the Multiverse recipe, so a run of each from one
YAML file differs only in the structure.

```bash
python -m multiverse.trl_recipes.sft_autoregressive \
    --config qwen2.5-1.5b-instruct \
    --dataset_name data/multiverse-sft --output_dir runs/ar-1.5b
# the same through the package CLI
multiverse train --recipe autoregressive --config qwen2.5-1.5b-instruct \
    --dataset_name data/multiverse-sft --output_dir runs/ar-1.5b
```
Multi-GPU: the same ``accelerate launch --config_file ...`` line as in ``sft_multiverse.py``.
"""

import argparse


def main(script_args, training_args, model_args):
    from .data import load_training_dataset, sequential_dataset
    from .trainer import check_publishing, check_script_args, load_causal_model, run_recipe

    check_script_args(script_args)
    check_publishing(training_args)
    if script_args.curriculum:
        raise ValueError("the curriculum belongs to the Multiverse recipe (sft_multiverse.py), not the baseline")
    model, tokenizer = load_causal_model(model_args, training_args)
    load = dict(name=script_args.dataset_name, config=script_args.dataset_config,
                streaming=script_args.dataset_streaming)
    num_proc = training_args.dataset_num_proc
    train_dataset = sequential_dataset(load_training_dataset(split=script_args.dataset_train_split, **load),
                                       script_args.sequential_column, num_proc)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = sequential_dataset(load_training_dataset(split=script_args.dataset_test_split, **load),
                                          script_args.sequential_column, num_proc)
    return run_recipe(model, tokenizer, model_args, training_args, script_args, train_dataset, eval_dataset)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from .recipe_parser import recipe_parser

    return recipe_parser("sft-autoregressive", "Autoregressive baseline SFT", subparsers, prog)


if __name__ == "__main__":
    parser = make_parser()
    main(*parser.parse_args_and_config())
