"""This machine's limits for decoding, measured, and the generation batch size they imply.

A greedy decoding step of a batch of b prompts reads every weight once (bandwidth) and does 2 x parameters x b
FLOPs (compute). Below the batch where the two take equally long (the ridge, bytes per parameter x FLOP/s /
(2 x bytes/s)), a bigger batch makes more tokens for the same weight reads; above it every token costs its full
compute and a bigger batch only adds padding, KV cache and rows that wait for the batch's longest answer.
evaluate.py batches at the ridge, rounded up to a power of two: on a 2-core AVX-512 VM in float32 (28 GB/s,
263 GFLOP/s) that is 32; on a GPU in bf16 it is in the hundreds, capped by memory.

The limits are measured here, in the dtype the model runs in and on the threads torch uses, in about a second:
bandwidth as the best rate of summing a large tensor, compute as the best rate of a large square matmul.
bench/ holds them against measured decode speed. torch is imported inside the functions.

The same limits, from vendor spec sheets instead of a measurement, for the GPUs bench/gpu_bench.py knows
(KNOWN_GPUS), and the arithmetic that holds a measured figure against them: the KV cache's bytes per token, the
bandwidth-bound decode rate and time, and the FLOPs of GRPO's loss passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

GB = 1e9
MAX_BATCH = 256
# On a GPU, the share of free memory the KV cache and logits of one batch may take.
GPU_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class DeviceLimits:
    """Measured limits of one device: read bandwidth (bytes/s) and matmul throughput (FLOP/s) in `dtype`."""

    device: str
    dtype: str
    bandwidth: float
    flops: float

    def describe(self) -> str:
        """One line for a log: the device and its measured limits."""
        return (
            f"{self.device}: {self.bandwidth / GB:.1f} GB/s read, {self.flops / 1e9:.0f} {self.dtype} GFLOP/s, measured"
        )


def _best_seconds(run: Any, synchronize: Any, repeats: int) -> float:
    run()  # first call: allocation, kernel selection
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure_limits(device: Any, dtype: Any) -> DeviceLimits:
    """Best-of-several bandwidth (summing 256 MiB, 1 GiB on a GPU) and matmul rate (2048^2, 8192^2 on a GPU)."""
    import torch

    device = torch.device(device)
    on_gpu = device.type == "cuda"
    synchronize = torch.cuda.synchronize if on_gpu else (lambda: None)
    with torch.inference_mode():
        data = torch.ones((2**30 if on_gpu else 2**28) // 4, dtype=torch.float32, device=device)
        bandwidth = data.numel() * 4 / _best_seconds(data.sum, synchronize, 5)
        del data
        n = 8192 if on_gpu else 2048
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        flops = 2 * n**3 / _best_seconds(lambda: a @ b, synchronize, 5 if on_gpu else 3)
    name = torch.cuda.get_device_name(device) if on_gpu else f"cpu, {torch.get_num_threads()} threads"
    return DeviceLimits(name, str(dtype).removeprefix("torch."), bandwidth, flops)


def ridge_batch(bytes_per_parameter: float, limits: DeviceLimits) -> float:
    """The batch at which a decoding step's matmuls take as long as reading the weights."""
    return bytes_per_parameter * limits.flops / (2 * limits.bandwidth)


def decode_batch_size(model: Any, limits: DeviceLimits, prompts: int | None = None, context: int = 1024) -> int:
    """The ridge batch rounded up to a power of two, at most MAX_BATCH, the number of prompts and (GPU) memory.

    `context`: prompt + completion tokens of one row, for the KV cache's size.
    """
    import torch

    bytes_per_parameter = next(model.parameters()).element_size()
    batch = 1
    while batch < min(ridge_batch(bytes_per_parameter, limits), MAX_BATCH):
        batch *= 2
    if model.device.type == "cuda":
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_per_token = kv_bytes_per_token(
            config.num_hidden_layers, config.num_key_value_heads, head_dim, bytes_per_parameter
        )
        per_row = kv_per_token * context + 2 * 4 * config.vocab_size  # the cache, and a step's float32 logits
        free, _ = torch.cuda.mem_get_info(model.device)
        while batch > 1 and batch * per_row > GPU_MEMORY_SHARE * free:
            batch //= 2
    return max(1, min(batch, prompts or batch))


# ---------------------------------------------------------------------------------------------------------
# Spec-sheet limits of known GPUs, and the arithmetic against them


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
