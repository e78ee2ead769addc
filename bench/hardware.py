"""Device limits and the arithmetic behind gpu_bench.py's figures: pure functions, no torch."""

from __future__ import annotations

from dataclasses import dataclass

# GSM8K's split sizes: an epoch of train, and the whole test set
GSM8K_TRAIN_PROMPTS = 7473
GSM8K_TEST_PROMPTS = 1319
GB = 1e9


@dataclass(frozen=True)
class GpuSpec:
    """A device's limits: memory bandwidth (bytes/s) and dense bf16 tensor throughput (FLOP/s, None: unknown)."""

    name: str
    bandwidth: float
    bf16_flops: float | None = None


# Matched against torch.cuda.get_device_name(), first match wins (so "H100" + "PCIe" before plain "H100").
# Vendor spec sheets; TFLOPS are dense (no sparsity), bf16 with fp32 accumulation.
KNOWN_GPUS: list[tuple[tuple[str, ...], GpuSpec]] = [
    (("H100", "PCIE"), GpuSpec("H100 PCIe", 2.0e12, 756e12)),
    (("H100", "NVL"), GpuSpec("H100 NVL", 3.9e12, 835e12)),
    (("H100",), GpuSpec("H100 SXM", 3.35e12, 989e12)),
    (("H200",), GpuSpec("H200", 4.8e12, 989e12)),
    (("A100", "80GB"), GpuSpec("A100 80GB", 2.0e12, 312e12)),
    (("A100",), GpuSpec("A100 40GB", 1.555e12, 312e12)),
    (("3090", "TI"), GpuSpec("RTX 3090 Ti", 1008e9, 80e12)),
    (("3090",), GpuSpec("RTX 3090", 936e9, 71e12)),
    (("4090",), GpuSpec("RTX 4090", 1008e9, 165e12)),
    (("L40S",), GpuSpec("L40S", 864e9, 362e12)),
    (("A10G",), GpuSpec("A10G", 600e9)),
    (("A10",), GpuSpec("A10", 600e9, 125e12)),
    (("L4",), GpuSpec("L4", 300e9, 121e12)),
]
TARGET = GpuSpec("RTX 3090", 936e9, 71e12)  # the blog's 24 GB card
TARGET_MEMORY = 24 * 2**30


def find_gpu(device_name: str) -> GpuSpec | None:
    """The KNOWN_GPUS entry whose words all appear in `device_name` (case-insensitive), else None."""
    upper = device_name.upper()
    for words, spec in KNOWN_GPUS:
        if all(word in upper for word in words):
            return spec
    return None


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """KV-cache bytes one token of context takes in one sequence: K and V, every layer."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def decode_limit_tokens_per_s(
    batch: int, bandwidth: float, param_bytes: float, kv_per_token: float, context: float
) -> float:
    """Bandwidth-bound decoding: each step reads all weights and the batch's KV cache once, makes `batch` tokens."""
    return batch * bandwidth / (param_bytes + kv_per_token * context * batch)


def decode_limit_seconds(
    batch: int, prompt_len: float, new_tokens: int, bandwidth: float, param_bytes: float, kv_per_token: float
) -> float:
    """Least time for `new_tokens` decoding steps of `batch` rows, at the average context prompt + new / 2."""
    limit = decode_limit_tokens_per_s(batch, bandwidth, param_bytes, kv_per_token, prompt_len + new_tokens / 2)
    return batch * new_tokens / limit


def training_flops(params: int, tokens: int, gradient_checkpointing: bool, beta: float) -> float:
    """FLOPs of GRPO's loss passes over `tokens` with a frozen base + LoRA (2 x params per token per pass).

    Passes: forward, backward to the activations (LoRA's own weight gradients are negligible), the forward again
    under gradient checkpointing, and the frozen reference model's forward when beta > 0 (the KL term).
    """
    passes = 2 + int(gradient_checkpointing) + int(beta > 0)
    return 2.0 * params * tokens * passes


def epoch_steps(prompts: int, prompts_per_step: int) -> int:
    """Optimizer steps in one epoch: trl's sampler drops the last incomplete batch of prompts."""
    return prompts // prompts_per_step


def project_seconds(measured: float, limit: float, ratio: float) -> float:
    """Measured time on another device: the hardware-bound part (`limit`) scaled by `ratio`, the rest kept."""
    return measured + limit * (ratio - 1.0)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GB:.2f} GB"


def percent(achieved: float, limit: float | None) -> str:
    return f"{100 * achieved / limit:.1f}%" if limit else "n/a"
