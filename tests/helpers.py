"""Shared test helpers: run the repo's scripts the way a user does."""

import os
import subprocess
import sys

from conftest import REPO


def run_script(script: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python SCRIPT ARGS...` from the repo root, offline; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


# The smallest shape vLLM's CPU attention takes: head size 64 (smoke's tiny model has 16), grouped-query like Qwen.
VLLM_TINY_SHAPE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1)


def build_wide_tiny_model(folder, **shape):
    """smoke's tiny model (`shape` changes its sizes) with its matrices redrawn wide (std 0.3), so that every
    prompt gets its own completion.

    With smoke's own init (std 0.02) greedy decoding prints newlines only: every prompt gives the same
    completion, and batching, attention or an adapter would have nothing to change.
    """
    import torch
    from transformers import AutoModelForCausalLM

    import smoke

    if shape:
        tokenizer = smoke.build_tiny_tokenizer()
        smoke.build_qwen2_model(tokenizer, {**smoke.TINY_SHAPE, **shape}).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    else:
        folder = smoke.build_tiny_model(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.3, generator=generator)
    model.save_pretrained(folder)
    return folder
