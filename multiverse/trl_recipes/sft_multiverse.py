"""Multiverse SFT with TRL: loss on the completion, the structure mask built in the backbone.

The data is a prompt-completion dataset (conversational) whose completions carry the Multiverse tags, as
``multiverse curate`` writes it. A Qwen2 checkpoint (e.g. Qwen2.5-*-Instruct) is converted in memory (the
12 tags added, their embeddings initialized); a Multiverse checkpoint is used as it is. The collator turns
each tokenized example into segment ids, segment visibility and positions, and ``MultiverseModel`` turns
those into a FlexAttention ``BlockMask`` on CUDA (a dense bool mask with ``sdpa`` on the CPU).

# One GPU, Qwen2.5-1.5B-Instruct, 32K tokens per example
```bash
python -m multiverse.trl_recipes.sft_multiverse \
    --config qwen2.5-1.5b-instruct \
    --dataset_name data/multiverse-sft --output_dir runs/mv-1.5b
# the same through the package CLI
multiverse train --config qwen2.5-1.5b-instruct --dataset_name data/multiverse-sft
```

# 8 GPUs per node with FSDP (or DeepSpeed ZeRO-3: configs/accelerate/deepspeed_zero3.yaml), 32B
```bash
accelerate launch --config_file multiverse/trl_recipes/configs/accelerate/fsdp.yaml \
    --num_machines 2 --machine_rank $RANK --main_process_ip $MASTER_ADDR --main_process_port 29500 \
    --num_processes 16 \
    -m multiverse.trl_recipes.sft_multiverse \
    --config qwen2.5-32b-instruct --dataset_name data/multiverse-sft
```

# Curriculum: autoregressive first, then mixed, then Multiverse only (one pass per stage)
```bash
python -m multiverse.trl_recipes.sft_multiverse \
    --config qwen2.5-1.5b-instruct-curriculum --dataset_name data/multiverse-sft
```

# CPU smoke run (sdpa; FlexAttention has no CPU backward)
```bash
python -m multiverse.trl_recipes.sft_multiverse --model_name_or_path path/to/tiny-multiverse \
    --dataset_name data.jsonl --attn_implementation sdpa --use_cpu --bf16 false --max_steps 2 --output_dir /tmp/mv
```

The autoregressive baseline on the same data and the same config: ``sft_autoregressive.py``.
"""

import argparse


def check_training_args(training_args):
    if training_args.packing or training_args.padding_free:
        # One row is laid out as one sequence; packed documents would see each other's structure.
        raise ValueError("the Multiverse recipe does not support packing or padding_free; set both to false")
    # The collator takes the loss mask from TRL's completion_mask; these two settings would need another one.
    if training_args.completion_only_loss is False:
        raise ValueError("completion_only_loss=False: the Multiverse recipe trains on the completion only; "
                         "leave it unset or true")
    if training_args.assistant_only_loss:
        raise ValueError("assistant_only_loss=True is not supported by the Multiverse recipe: use a "
                         "prompt/completion dataset (as `multiverse curate` writes), whose loss is the completion")


def main(script_args, training_args, model_args):
    from .collator import MultiverseDataCollator
    from .curriculum import curriculum_dataset, parse_stages
    from .data import load_training_dataset
    from .trainer import check_publishing, check_script_args, load_multiverse_model, run_recipe

    check_script_args(script_args)
    check_publishing(training_args)
    check_training_args(training_args)
    stages = parse_stages(script_args.curriculum) if script_args.curriculum else None
    if stages and training_args.num_train_epochs != 1:
        raise ValueError(f"num_train_epochs={training_args.num_train_epochs} with a curriculum: the stages set the "
                         "epochs, so pass --num_train_epochs 1")
    model, tokenizer = load_multiverse_model(model_args, training_args)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError(f"{model_args.model_name_or_path}: the tokenizer has neither a pad nor an eos token")

    load = dict(name=script_args.dataset_name, config=script_args.dataset_config,
                streaming=script_args.dataset_streaming)
    train_dataset = load_training_dataset(split=script_args.dataset_train_split, **load)
    if stages:
        train_dataset = curriculum_dataset(train_dataset, stages, seed=training_args.seed,
                                           sequential_column=script_args.sequential_column)
        training_args.train_sampling_strategy = "sequential"  # the stages are laid out in order
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = load_training_dataset(split=script_args.dataset_test_split, **load)

    collator = MultiverseDataCollator(model.config.multiverse_tag_ids, pad_id, max_length=training_args.max_length,
                                      pad_to_multiple_of=training_args.pad_to_multiple_of,
                                      position_rule=getattr(model.config, "multiverse_position_rule", "reference"))
    return run_recipe(model, tokenizer, model_args, training_args, script_args, train_dataset, eval_dataset, collator)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from .recipe_parser import recipe_parser

    return recipe_parser("sft-multiverse", "Multiverse SFT", subparsers, prog)


if __name__ == "__main__":
    parser = make_parser()
    main(*parser.parse_args_and_config())
