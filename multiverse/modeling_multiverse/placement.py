"""Where the engine's per-layer state lives when the model is spread out by transformers' or accelerate's engines.

- ``tp_plan="auto"`` (torch DTensor, under torchrun): each rank's attention holds a share of the heads, so the
  KV cache is sized from the layer's own K projection, never from the config.
- ``device_map`` (accelerate hooks): layers sit on different devices, so each layer's cache sits on its layer's
  device, and the step sends the write slots once per device rather than once per layer.
- Under tensor parallelism every rank runs the same engine on the same prompts; the ranks must emit the same
  tokens, so the tokens sampled on the first rank of the TP group are the ones every rank emits.
This folder is copied verbatim into every saved model as remote code: relative imports only.
"""

import torch


def _local(weight):
    # A DTensor shard's local part: what this rank really computes with.
    return weight.to_local() if hasattr(weight, "to_local") else weight


def _layer_device(layer, fallback):
    # accelerate's hook names where an offloaded layer runs; otherwise its weights say where it is.
    for module in (layer, layer.self_attn):
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    device = _local(layer.self_attn.k_proj.weight).device
    return torch.device(fallback) if device.type == "meta" else device


def kv_layers(model, default_device) -> list[tuple[int, int, torch.device]] | None:
    """(key/value heads, head dim, device) of every decoder layer, as this process holds it; None for a model
    without Qwen2-style decoder layers (the tests' table mock), whose config then sizes the cache."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        return None
    table = []
    for layer in layers:
        attn = layer.self_attn
        head_dim = attn.head_dim
        heads = _local(attn.k_proj.weight).shape[0] // head_dim
        table.append((heads, head_dim, _layer_device(layer, default_device)))
    return table


def tensor_parallel_group(model):
    """The process group over which ``tp_plan`` sharded the model (its DTensor weights' "tp" mesh), else None.
    Only a mesh dimension named "tp" counts: FSDP's DTensors are sharded over ranks that decode other prompts."""
    for param in model.parameters():
        mesh = getattr(param, "device_mesh", None)
        if mesh is None or "tp" not in (mesh.mesh_dim_names or ()):
            continue
        mesh = mesh["tp"] if mesh.ndim > 1 else mesh
        return mesh.get_group() if mesh.size() > 1 else None
    return None


def agree_tokens(tokens: torch.Tensor, group) -> torch.Tensor:
    """Every rank of ``group`` takes the tokens its first rank sampled. Logits agree only up to the order of the
    all-reduce sums, and unseeded sampling draws from each rank's own generator: without this, ranks could fork
    different trees and the next collective would mismatch or hang."""
    if group is None:
        return tokens
    import torch.distributed as dist

    dist.broadcast(tokens, src=dist.get_global_rank(group, 0), group=group)
    return tokens


class PerDeviceInputs:
    """Layers on several devices (``device_map``): each device gets the step's mask and rotary tables once.

    The backbone hands every layer the same mask and ``position_embeddings``; accelerate's hook then copies them
    to the layer's device for each layer, so 14 layers on a second GPU meant 14 copies of the mask per step. A
    forward pre-hook (it runs before accelerate's, which then finds them in place) gives each layer the copy made
    for its device. Install it around one forward: ``with PerDeviceInputs(layers, devices): model(...)``.
    """

    MOVED = ("attention_mask", "position_embeddings")

    def __init__(self, layers, devices):
        self.layers, self.devices = list(layers), [torch.device(d) for d in devices]
        self.copies, self.handles = {}, []

    def __enter__(self):
        self.handles = [layer.register_forward_pre_hook(self._hook(device), with_kwargs=True)
                        for layer, device in zip(self.layers, self.devices)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles, self.copies = [], {}  # the copies live for one step only

    def _hook(self, device):
        def hook(module, args, kwargs):
            return args, {k: self._on(v, device) if k in self.MOVED else v for k, v in kwargs.items()}
        return hook

    def _on(self, value, device):
        if isinstance(value, tuple):
            return tuple(self._on(v, device) for v in value)
        if not torch.is_tensor(value) or value.device == device:
            return value
        key = (id(value), device)
        if key not in self.copies:  # the source is held too, so its id cannot be reused within the step
            self.copies[key] = (value, value.to(device, non_blocking=True))
        return self.copies[key][1]
