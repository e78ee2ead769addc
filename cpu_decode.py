"""Decoding on the CPU at the speed of its matrix products: weights packed for oneDNN, one random draw per row.

A decoding step of SmolLM2-135M at 8-16 rows on 2 CPU cores spends much of its time in two places that run far
below the machine's limits (docs/BENCHMARKS.md, "Decoding on the CPU"):
1. `F.linear` hands each [rows x 576] activation to MKL's sgemm with the weight as stored, [out x in]. At a few rows
   that reaches a third of the machine's bandwidth: the tied LM head ([49152 x 576], a fifth of the weights) alone
   takes ~25 ms a step at 16 rows where reading it once takes ~4 ms. `packed_linears` gives every `nn.Linear` a
   copy of its weight in oneDNN's blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, the layout
   torch.compile's freezing pass uses on the CPU) and multiplies through `torch.ops.mkldnn._linear_pointwise`,
   the op that pass emits: the same float32 products, the same greedy tokens (tests/test_cpu_decode.py), a decoding
   step ~1.5x faster. The copies are made when the context opens, so they follow a weight that trains between
   calls; they cost the weights' memory again while it is open.
2. transformers samples with `torch.multinomial(probs, 1)`, which draws an exponential variate for every entry of
   the vocabulary (the Gumbel-max trick): ~20 ms a step at 16 rows over 49,152 entries. `sample_from_cumulative`
   draws one uniform number per row and finds it in the row's cumulative distribution (float64): the same
   distribution, from another stream of random numbers. `cumulative_sampling` puts it in place of
   `torch.multinomial` for single draws while a generate call runs, and puts the original back after.

3. With padded prompts transformers hands SDPA an attention mask, and then copies each layer's keys and values once
   per query head group (`repeat_kv`: SmolLM2 has 9 query heads on 3 key/value heads) before every attention call,
   because its check allows SDPA's own grouped-query attention (`enable_gqa`) with a mask on CUDA only. torch's
   CPU kernel takes the mask and the grouping together, with the same results: `grouped_query_attention` puts such a
   call in place of transformers' "sdpa" attention while a generate call runs (~20 ms of a ~125 ms step at 16 rows).

`fast_cpu_generation(model, generate)` wraps a generate function with all three, on the CPU only; elsewhere it
changes nothing. torch is imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def can_pack(model: Any) -> bool:
    """True when `model` sits on the CPU in float32 and this torch has oneDNN's packed linear ops."""
    import torch

    parameter = next(model.parameters(), None)
    ops = torch.ops.mkldnn
    return (
        parameter is not None
        and parameter.device.type == "cpu"
        and parameter.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_reorder_linear_weight")
    )


def _packable_linears(model: Any) -> list[Any]:
    """The float32 CPU `nn.Linear` modules of `model` outside LoRA adapters (those are off while generating merged)."""
    import torch

    return [
        module
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear
        and "lora_" not in name
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    ]


def _packed_forward(weight: Any, bias: Any, inputs: Any) -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")


@contextmanager
def packed_linears(model: Any, rows: int) -> Iterator[int]:
    """For the duration, each `nn.Linear` of `model` multiplies through a oneDNN-packed copy of its weight.

    `rows` is the batch the packing is tuned for (any batch computes correctly). Yields how many layers were packed;
    on exit every layer's own `forward` is back. Use it under `torch.no_grad()`: the packed copies carry no grad.
    """
    import torch

    packed = []
    try:
        with torch.no_grad():
            for module in _packable_linears(model):
                weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), max(1, rows))
                bias = None if module.bias is None else module.bias.detach()
                module.forward = functools.partial(_packed_forward, weight, bias)
                packed.append(module)
        yield len(packed)
    finally:
        for module in packed:
            del module.forward  # the class's forward again


def sample_from_cumulative(probs: Any, *, generator: Any = None) -> Any:
    """One index per row of `probs` ([rows x vocabulary], rows need not sum to 1), drawn by its cumulative sum.

    Draws as `torch.multinomial(probs, 1)` does, with one uniform number per row: the first index whose cumulative
    probability exceeds it. An entry of probability 0 is never drawn.
    """
    import torch

    if probs.dim() != 2:
        raise ValueError("sample_from_cumulative draws one index per row of a 2-D tensor")
    cumulative = probs.to(torch.float64).cumsum(-1)
    total = cumulative[:, -1:]
    threshold = torch.rand(total.shape, dtype=torch.float64, device=probs.device, generator=generator) * total
    drawn = torch.searchsorted(cumulative, threshold, right=True).clamp_(max=probs.shape[1] - 1)
    missed = probs.gather(1, drawn) <= 0  # a threshold rounded up to the total lands past the last positive entry
    if missed.any():
        last_positive = probs.shape[1] - 1 - (probs.flip(-1) > 0).to(torch.int8).argmax(-1, keepdim=True)
        drawn = torch.where(missed, last_positive, drawn)
    return drawn


@contextmanager
def cumulative_sampling() -> Iterator[None]:
    """For the duration, `torch.multinomial` draws single samples per row with `sample_from_cumulative`."""
    import torch

    original = torch.multinomial

    @functools.wraps(original)
    def multinomial(probs: Any, num_samples: int, replacement: bool = False, *, generator: Any = None, out: Any = None):
        if num_samples == 1 and probs.dim() == 2 and probs.device.type == "cpu" and out is None:
            return sample_from_cumulative(probs, generator=generator)
        return original(probs, num_samples, replacement, generator=generator, out=out)

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = original


def _grouped_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple[Any, None]:
    """transformers' SDPA attention, with SDPA's own grouping of query heads where it would copy keys and values."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = (
        getattr(module, "num_key_value_groups", 1) > 1
        and attention_mask is not None
        and query.device.type == "cpu"
        and kwargs.get("position_bias") is None
        and not kwargs.get("output_attentions", False)
    )
    if not grouped:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        enable_gqa=True,
    )
    return output.transpose(1, 2).contiguous(), None


@contextmanager
def grouped_query_attention() -> Iterator[None]:
    """For the duration, transformers' "sdpa" attention lets torch group the query heads on the CPU, mask or not."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    local = ALL_ATTENTION_FUNCTIONS._local_mapping  # an override of this process's registry, as transformers allows
    before = local.get("sdpa")
    ALL_ATTENTION_FUNCTIONS["sdpa"] = _grouped_sdpa
    try:
        yield
    finally:
        if before is None:
            del ALL_ATTENTION_FUNCTIONS["sdpa"]
        else:
            ALL_ATTENTION_FUNCTIONS["sdpa"] = before


def batch_rows(args: tuple, kwargs: dict[str, Any]) -> int:
    """The number of rows of a `generate(input_ids, ...)` call (1 when it cannot tell)."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    return int(input_ids.shape[0]) if getattr(input_ids, "ndim", 0) == 2 else 1


def fast_cpu_generation(model: Any, generate: Callable[..., Any]) -> Callable[..., Any]:
    """`generate` under `packed_linears(model, rows)`, `cumulative_sampling` and `grouped_query_attention`, when
    `model` can_pack.

    Call it where `model`'s weights are those the call should use (inside lora_merge.merged_lora, for instance):
    the packed copies are made when each call starts.
    """

    @functools.wraps(generate)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not can_pack(model):
            return generate(*args, **kwargs)
        with packed_linears(model, batch_rows(args, kwargs)), cumulative_sampling(), grouped_query_attention():
            return generate(*args, **kwargs)

    return wrapped
