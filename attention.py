"""Grouped-query attention through SDPA without copying the key/value heads, registered with transformers.

transformers 5.17's "sdpa" attention hands grouped-query attention (Qwen2.5: 14 query heads share 2 key/value
heads) to `torch.nn.functional.scaled_dot_product_attention` with `enable_gqa=True` only when there is no
attention mask. A left-padded batch always has one, so it first copies every key/value head once per query
head (`repeat_kv`): 7x the KV cache written and read again at every decoding step. The function here is the
same SDPA call with the mask *and* `enable_gqa=True`, so SDPA reads the shared heads in place: on the CPU, whose
flash kernel takes both. On other devices it is transformers' own sdpa (CUDA's fused kernels take a mask or
grouped heads, not both, and the math kernel they would fall back to is slower than the copy). It is registered
through transformers' public `AttentionInterface` (and `AttentionMaskInterface`, with sdpa's own boolean mask)
under the name `GQA_SDPA`; a model uses it with `from_pretrained(..., attn_implementation=GQA_SDPA)` or
`model.set_attn_implementation(GQA_SDPA)`. The arithmetic is SDPA's: the same tokens as "sdpa" and "eager"
(tests/test_attention.py).

torch is imported inside the functions: importing this module is free.
"""

from __future__ import annotations

from typing import Any

GQA_SDPA = "sdpa_gqa"  # the name models are loaded with
_registered = False


def sdpa_gqa_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature; query (B, H, q, d), key/value (B, H_kv, kv, d) -> (B, q, H, d)."""
    import torch

    if query.device.type != "cpu" or kwargs.get("position_bias") is not None:
        # On CUDA, SDPA's fused kernels take a mask or unequal head counts, not both (flash rejects the mask,
        # memory-efficient the head counts): masked GQA would fall to the math kernel. transformers' own copies.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    grouped = query.shape[1] != key.shape[1]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # As transformers' sdpa: SDPA's own causal mask only in prefill without a padding mask (it aligns top-left).
    is_causal = bool(query.shape[2] > 1 and attention_mask is None and is_causal)
    if is_causal and key.shape[2] > query.shape[2]:  # prefill into an empty static cache: the rest is empty slots
        key, value = key[:, :, : query.shape[2]], value[:, :, : query.shape[2]]
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=grouped,
    )
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register GQA_SDPA with transformers (once per process); returns the name to load models with."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(GQA_SDPA, sdpa_gqa_attention_forward)
        AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
        _registered = True
    return GQA_SDPA
