"""Rollouts from the LoRA adapter folded into the weights: the same policy, fewer matmuls per token.

Without vLLM, trl generates GRPO's completions (and the held-out answers) with the training model itself: a
PeftModel whose every targeted projection runs its base matmul and then the adapter's two small ones, at every
decoding step: 420 more small matmuls per token for SmolLM2's 30 layers. Folded in, its rollout batch (8 x 200
tokens) decoded 1.14x faster on 2 quiet CPU cores with the same greedy tokens (docs/BENCHMARKS.md, "GRPO rollouts on
the CPU").
`merged_lora` gives each projection a new weight, its base weight plus the adapter's delta (peft's own
`get_delta_weight`, the one `merge_adapter` adds), switches the adapters off for the duration, and then puts back
the very tensors it replaced: unlike merge_adapter/unmerge_adapter, no rounding builds up over a run, in any
dtype. While generating, the targeted weights take twice their memory. On the CPU, `generate_merged` also decodes
through cpu_decode.py (the merged weights packed for oneDNN, sampling by cumulative sums). torch and peft are
imported inside the functions.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cpu_decode import fast_cpu_generation


def lora_layers(model: Any) -> list[Any]:
    """The model's LoRA layers, whatever they wrap (an embedding's adapter is not in lora_A)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def can_merge(model: Any) -> bool:
    """True for a PeftModel whose LoRA layers are all plain LoRA (no DoRA, no LoRA bias) on a floating-point
    torch Linear (not 4-bit, not an embedding): their delta is the whole of what the adapter adds."""
    import torch

    layers = lora_layers(model) if hasattr(model, "disable_adapter") else []
    return bool(layers) and all(
        type(layer.get_base_layer()) is torch.nn.Linear
        and layer.get_base_layer().weight.is_floating_point()
        and not getattr(layer, "lora_variant", {})
        and not any(getattr(layer, "lora_bias", {}).values())
        for layer in layers
    )


@contextmanager
def merged_lora(model: Any) -> Iterator[None]:
    """For the duration, `model` (a PeftModel, can_merge) computes with its adapters folded into new weights."""
    import torch

    replaced = []
    try:
        with torch.no_grad():
            for layer in lora_layers(model):
                names = [name for name in layer.active_adapters if name in layer.lora_A]
                if layer.merged or not names:
                    continue  # merged by peft already (its weight has the delta), or no active adapter here
                base = layer.get_base_layer()
                delta = sum(layer.get_delta_weight(name) for name in names)
                replaced.append((base, base.weight.data))
                base.weight.data = base.weight.data + delta.to(base.weight.dtype)
        with model.disable_adapter():
            yield
    finally:
        for base, weight in replaced:
            base.weight.data = weight


def generate_merged(model: Any) -> bool:
    """Make `model.generate` run inside `merged_lora`; False (nothing changed) where the model cannot merge."""
    if not can_merge(model):
        return False
    original = model.generate
    decode = fast_cpu_generation(model, original)  # packs the merged weights, inside the merge

    @functools.wraps(original)
    def generate(*args: Any, **kwargs: Any) -> Any:
        with merged_lora(model):
            return decode(*args, **kwargs)

    model.generate = generate
    return True
