"""What a training run on the CPU needs in memory, estimated before the model loads, and the note that says so.

On the CPU a run's peak resident memory is the Python process (torch, tokenizer, data: ~1 GB), the model's
weights, and what one micro-batch keeps for the backward pass: every layer's activations for each of its tokens
(the full-vocabulary logits never exist whole: trl's fused LM head works in tiles). So the peak grows with the
tokens of a micro-batch, per_device_train_batch_size rows of up to max_length (sft.py) or max_prompt_length +
max_completion_length (train.py) tokens. Gradient accumulation gives the same update from smaller micro-batches
(tests/test_micro_batches.py), which is the flag the note names. The per-token figure is measured on SmolLM2-135M
with the allocator allocator.py preloads and scaled by the layer widths (docs/BENCHMARKS.md, "Peak memory");
pure arithmetic on config.json, no torch import.
"""

from __future__ import annotations

import json
from pathlib import Path

GB = 1e9
# The process before the model: Python, torch, transformers, trl, the tokenizer and the data.
RUNTIME_BYTES = 1.1 * GB
# Bytes kept per token of a micro-batch, per layer and unit of width (hidden + intermediate): sft.py's peaks on
# SmolLM2-135M with tcmalloc, 3.14 GB at micro-batches of 2 and 7.6 GB at 8 rows of ~340 GSM8K tokens (float32,
# LoRA, no gradient checkpointing), ~2.2 MB a token.
ACTIVATION_BYTES_PER_WIDTH = 35.0
# Gradient checkpointing keeps each layer's input only and recomputes the rest in the backward pass.
CHECKPOINTED_SHARE = 0.12
# Full fine-tuning keeps, per weight, its gradient and AdamW's two moments: three more copies.
FULL_TUNING_COPIES = 3


def model_shape(model_name_or_path: str) -> dict | None:
    """The layer count, widths and size of a local model folder (config.json), or None when it is not one."""
    config_file = Path(model_name_or_path).expanduser() / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    try:
        layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
        intermediate, vocab = int(config.get("intermediate_size", 4 * hidden)), int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    heads = int(config.get("num_attention_heads", 1))
    kv_width = int(config.get("num_key_value_heads", heads)) * int(config.get("head_dim") or hidden // heads)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * intermediate  # attention, gated MLP
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return {"layers": layers, "hidden": hidden, "intermediate": intermediate, "parameters": layers * per_layer + embeddings}


def peak_bytes(shape: dict, micro_batch_tokens: int, bytes_per_weight: int = 4, full_tuning: bool = False,
               gradient_checkpointing: bool = False) -> float:  # fmt: skip
    """Estimated peak resident bytes of a training run whose micro-batches hold `micro_batch_tokens` tokens."""
    weights = shape["parameters"] * bytes_per_weight * (1 + (FULL_TUNING_COPIES if full_tuning else 0))
    per_token = shape["layers"] * (shape["hidden"] + shape["intermediate"]) * ACTIVATION_BYTES_PER_WIDTH
    if gradient_checkpointing:
        per_token *= CHECKPOINTED_SHARE
    return RUNTIME_BYTES + weights + micro_batch_tokens * per_token


def available_bytes() -> float | None:
    """MemAvailable of /proc/meminfo (what can be used without swapping), None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_note(model_name_or_path: str, micro_batch: int, tokens_per_row: int, accumulation: int,
                full_tuning: bool = False, gradient_checkpointing: bool = False,
                available: float | None = None) -> str | None:  # fmt: skip
    """A one-line note when the run's estimated peak exceeds the available memory, with the smaller micro-batch
    (and accumulation, for the same update) that fits; None when it fits or cannot be estimated."""
    shape = model_shape(model_name_or_path)
    available = available_bytes() if available is None else available
    if shape is None or available is None:
        return None
    need = peak_bytes(shape, micro_batch * tokens_per_row, full_tuning=full_tuning, gradient_checkpointing=gradient_checkpointing)
    if need <= available:
        return None
    note = (f"memory: this run may need ~{need / GB:.1f} GB at its peak ({micro_batch} rows of up to {tokens_per_row} "
            f"tokens per micro-batch) and {available / GB:.1f} GB is available")  # fmt: skip
    for smaller in range(micro_batch - 1, 0, -1):
        if micro_batch % smaller:
            continue
        fits = peak_bytes(shape, smaller * tokens_per_row, full_tuning=full_tuning, gradient_checkpointing=gradient_checkpointing)
        if fits <= available:
            steps = accumulation * micro_batch // smaller
            return (f"{note}; --per_device_train_batch_size {smaller} --gradient_accumulation_steps {steps} gives "
                    f"the same update within ~{fits / GB:.1f} GB")  # fmt: skip
    return f"{note}; even one row per micro-batch may not fit: --gradient_checkpointing true keeps less"
