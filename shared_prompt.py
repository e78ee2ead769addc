"""Prompts read once: in GRPO's rollouts (the shared system prompt once per batch, each problem once per group),
and in the training forward pass of GRPO and SFT (the columns every row of a prompt group shares, once).

trl generates a GRPO step's completions as one batch of num_generations copies of each prompt, left padded, and
transformers' generate runs the whole batch through the model before the first new token: on the CPU that
prefill costs as much as a hundred decoding steps. Every row starts with the same system prompt, and each
prompt is there num_generations times. `generate_reading_prompts_once` wraps the training model's `generate`:
1. the prefix every row shares (the system prompt) runs through the model once, at batch 1;
2. each distinct prompt's own tokens (all but the last) run once, from a copy of that cache;
3. the rows' caches are copies of their prompt's, and transformers' generate starts from them with only the
   last prompt token to read, then samples as it would have.
Each row is laid out as prefix + padding + its own tokens (the padding masked, positions counted from the
attention mask), the width trl gave, so trl cuts the completions where it expects them. Every row attends to the
same tokens at the same positions as before: greedy tokens are unchanged (tests/test_shared_prompt.py); only
float rounding of the prompt's activations can differ.

`train_reading_prompts_once` does the same for the loss's forward and backward passes. trl scores a batch as
rows of prompt + completion, and a GRPO batch holds each prompt num_generations times: every copy runs through
every layer, forward and backward, though only the completion's positions are scored. Wrapped, the backbone runs
the columns before the first scored position once per distinct row (a GRPO group's prompt, or the system prompt
all SFT rows begin with), copies their keys and values to the rows with index_select (autograd sums the copies'
gradients in order, as the full batch would, and the same in every run), and runs the rest from that cache at the
same positions. The same loss and gradients within float32 rounding (tests/test_shared_prompt.py), for fewer
tokens through the model.
torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any

from generation import MIN_SHARED_PREFIX, shared_prefix_length  # evaluation's own rule for a shared prefix

# The first scored column of the fused forward call in progress (None: none, or not a scored call).
_SCORED_FROM: contextvars.ContextVar[int | None] = contextvars.ContextVar("scored_from", default=None)


def layout(rows: list[list[int]], prefix: int, width: int, pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """(input_ids, attention_mask) of `rows` at `width`: the shared prefix, padding, then each row's own tokens."""
    ids, mask = [], []
    for row in rows:
        gap = width - len(row)
        ids.append(row[:prefix] + [pad_id] * gap + row[prefix:])
        mask.append([1] * prefix + [0] * gap + [1] * (len(row) - prefix))
    return ids, mask


def prompt_cache(model: Any, rows: list[list[int]], width: int, pad_id: int) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, cache): every prompt token but each row's last already in the cache."""
    import torch
    from transformers import DynamicCache

    device = model.device
    unique = list(dict.fromkeys(tuple(row) for row in rows))
    prefix = shared_prefix_length(rows)
    prefix = prefix if prefix >= MIN_SHARED_PREFIX else 0
    ids, mask = (torch.tensor(x, device=device) for x in layout([list(r) for r in unique], prefix, width, pad_id))
    cache = DynamicCache(config=model.config)
    if prefix:
        model(input_ids=ids[:1, :prefix], past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(len(unique))
    if width - 1 > prefix:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=ids[:, prefix:-1], attention_mask=mask[:, :-1], position_ids=positions[:, prefix:-1],
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
    which = [unique.index(tuple(row)) for row in rows]
    cache.batch_select_indices(torch.tensor(which, device=device))
    full_ids, full_mask = (torch.tensor(x, device=device) for x in layout(rows, prefix, width, pad_id))
    return full_ids, full_mask, cache


def generate_reading_prompts_once(model: Any, pad_id: int) -> None:
    """Make `model.generate` start from the prompts' cache (module docstring); a call that brings its own cache,
    or anything but input_ids and attention_mask, goes to generate as it is."""
    import torch

    original = model.generate

    @functools.wraps(original)
    def generate(*args: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        # Images, token types or a cache of the caller's: generate as asked.
        extra_inputs = any(isinstance(value, torch.Tensor) or key == "past_key_values" for key, value in kwargs.items())
        passthrough = args or input_ids is None or attention_mask is None or extra_inputs
        if passthrough or input_ids.shape[1] < 2:
            return original(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
        with torch.no_grad():
            ids, mask, cache = prompt_cache(model, rows, input_ids.shape[1], pad_id)
        return original(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs)

    model.generate = generate


def first_scored_column(labels: Any) -> int | None:
    """The first column where some row has a label (trl masks the prompt with -100), None when none has."""
    scored = (labels != -100).any(dim=0).nonzero()
    return int(scored[0]) if len(scored) else None


def train_reading_prompts_once(model: Any) -> bool:
    """Make the loss's forward pass read the columns before the first scored one once per distinct row (module
    docstring). `model`: the trainer's model after trl added its fused LM head; False where there is none."""
    import torch
    from transformers import DynamicCache
    from transformers.modeling_outputs import BaseModelOutputWithPast

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    fused_forward = vars(causal_lm).get("forward")  # trl's fused head replaces the instance's forward
    backbone = getattr(causal_lm, "base_model", None)
    if fused_forward is None or backbone is None or backbone is causal_lm:
        return False
    if getattr(backbone, "gradient_checkpointing", False):
        return False  # checkpointed layers run without a cache
    backbone_forward = backbone.forward

    @functools.wraps(fused_forward)
    def scored_forward(*args: Any, fused_lm_head: bool = False, labels: Any = None, **kwargs: Any) -> Any:
        scored_from = first_scored_column(labels) if fused_lm_head and labels is not None and not args else None
        token = _SCORED_FROM.set(scored_from)
        try:
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        finally:
            _SCORED_FROM.reset(token)

    @functools.wraps(backbone_forward)
    def shared_backbone(*args: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        width = _SCORED_FROM.get()
        own_inputs = args or kwargs.get("past_key_values") is not None or kwargs.get("inputs_embeds") is not None
        if own_inputs or width is None or input_ids is None or attention_mask is None or not 0 < width < input_ids.shape[1]:
            return backbone_forward(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        rows, kwargs = len(input_ids), {**kwargs, "use_cache": True}
        ids, mask = input_ids[:, :width], attention_mask[:, :width]
        same = ((ids == ids[:1]) & (mask == mask[:1])).all(dim=0)
        prefix = int(same.int().cumprod(dim=0).sum())  # columns every row shares (the system prompt)
        prefix = prefix if prefix >= MIN_SHARED_PREFIX else 0
        if prefix < width:
            distinct, which = torch.unique(torch.cat([ids[:, prefix:], mask[:, prefix:]], dim=1), dim=0, return_inverse=True)
        else:
            distinct, which = ids[:1, prefix:], torch.zeros(rows, dtype=torch.long, device=ids.device)
        if not prefix and len(distinct) == rows:
            return backbone_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        cache, hidden = DynamicCache(config=backbone.config), []
        if prefix:
            shared = backbone_forward(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], past_key_values=cache, **kwargs)
            hidden.append(shared.last_hidden_state.expand(rows, -1, -1))
            cache.batch_repeat_interleave(len(distinct))
        if width > prefix:
            own = width - prefix
            own_mask = torch.cat([mask[:1, :prefix].expand(len(distinct), -1), distinct[:, own:]], dim=1)
            head = backbone_forward(input_ids=distinct[:, :own], attention_mask=own_mask, past_key_values=cache, **kwargs)
            hidden.append(head.last_hidden_state.index_select(0, which))
        # Each row's copy of its prompt's keys and values. reorder_cache takes them with index_select, whose backward
        # adds a prompt's copies in order; batch_select_indices indexes (`keys[which]`), whose backward on the CPU adds
        # them with atomic adds from both threads in no fixed order: other gradients in every run.
        cache.reorder_cache(which)
        tail = backbone_forward(input_ids=input_ids[:, width:], attention_mask=attention_mask, past_key_values=cache, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=torch.cat([*hidden, tail.last_hidden_state], dim=1))

    causal_lm.forward = scored_forward
    backbone.forward = shared_backbone
    return True
