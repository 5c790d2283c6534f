"""accelerate configs for multi-GPU and multi-node runs (FSDP2, DeepSpeed ZeRO-3)."""
