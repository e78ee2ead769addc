"""GRPO rollouts that read each prompt once: the shared system prompt once per batch, each problem once per group.

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
float rounding of the prompt's activations can differ. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import functools
from typing import Any

# A prefix shorter than this is not worth its own forward pass (generation.py's threshold for evaluation).
MIN_SHARED_PREFIX = 16


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix all `rows` start with, leaving every row at least one token of its own."""
    first = rows[0]
    length = min(len(row) for row in rows) - 1
    for row in rows[1:]:
        length = next((k for k in range(length) if row[k] != first[k]), length)
    return max(length, 0)


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
