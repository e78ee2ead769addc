"""gpu_bench.py's epoch estimate and its projection to the blog's 24 GB card, the headline, and number formats."""

from __future__ import annotations

from typing import Any

from roofline import GB, GpuSpec

# GSM8K's split sizes: an epoch of train, and the whole test set
GSM8K_TRAIN_PROMPTS = 7473
GSM8K_TEST_PROMPTS = 1319
TARGET = GpuSpec("RTX 3090", 936e9, 71e12)  # the blog's 24 GB card
TARGET_MEMORY = 24 * 2**30
# The generation path every training figure describes: not the blog's Unsloth + vLLM one.
TRAIN_PATH = "train.py --backend hf --use_vllm false: trl's transformers generate() with attention.py's attention"


def epoch_steps(prompts: int, prompts_per_step: int) -> int:
    """Optimizer steps in one epoch: trl's sampler drops the last incomplete batch of prompts."""
    return prompts // prompts_per_step


def project_seconds(measured: float, limit: float, ratio: float) -> float:
    """Measured time on another device: the hardware-bound part (`limit`) scaled by `ratio`, the rest kept."""
    return measured + limit * (ratio - 1.0)


def format_duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(value: float | None) -> str:
    """Decimal gigabytes, or n/a."""
    return "n/a" if value is None else f"{value / GB:.2f} GB"


def percent(achieved: float, limit: float | None) -> str:
    """`achieved` as a share of `limit`, or n/a when the limit is unknown."""
    return f"{100 * achieved / limit:.1f}%" if limit else "n/a"


def estimate_epoch(result: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """One GSM8K train epoch at the measured step time, and on TARGET when this device's limits are known."""
    steps = epoch_steps(GSM8K_TRAIN_PROMPTS, result["prompts_per_step"])
    gen, rest = result["generation_s_per_step"], result["rest_s_per_step"]
    estimate: dict[str, Any] = {"steps": steps, "measured_s": steps * (gen + rest), "projected": None}
    if result["generation_limit_s_per_step"] is None:
        return estimate
    bandwidth_ratio = device["bandwidth"] / TARGET.bandwidth
    gen_projected = project_seconds(gen, result["generation_limit_s_per_step"], bandwidth_ratio)
    flops_ratio = device["bf16_flops"] / TARGET.bf16_flops if device["bf16_flops"] else None
    rest_projected = project_seconds(rest, result["rest_limit_s_per_step"], flops_ratio) if flops_ratio else rest
    reserved = result["peak_reserved_bytes"]
    estimate["projected"] = {
        "device": TARGET.name,
        "bandwidth_ratio": bandwidth_ratio,
        "flops_ratio": flops_ratio,
        "generation_s_per_step": gen_projected,
        "rest_s_per_step": rest_projected,
        "epoch_s": steps * (gen_projected + rest_projected),
        # Pessimistic bound: every second of generation bandwidth-bound, scaled whole.
        "epoch_s_all_generation_scaled": steps * (gen * bandwidth_ratio + rest_projected),
        "peak_memory_fits": None if reserved is None else reserved < TARGET_MEMORY,
    }
    return estimate


def print_epoch(estimate: dict[str, Any], result: dict[str, Any], device: dict[str, Any], toy: bool) -> None:
    """The epoch, measured on this device and projected to TARGET, the projection labelled as one."""
    steps = estimate["steps"]
    toy_note = " -- toy sizes, not the real model's cost" if toy else ""
    print(f"\nepoch: GSM8K train, {GSM8K_TRAIN_PROMPTS} prompts / {result['prompts_per_step']} per step = {steps} "
          f"steps, on {TRAIN_PATH}")  # fmt: skip
    print(f"  measured  ({device['name']}): {steps} x {result['seconds_per_step']:.2f} s = "
          f"{format_duration(estimate['measured_s'])}{toy_note}")  # fmt: skip
    projected = estimate["projected"]
    if projected is None:
        print(f"  projected ({TARGET.name}): n/a (this device's bandwidth is unknown: pass --bandwidth_gbs and --tflops)")
        return
    rest_how = (f"limit time x {projected['flops_ratio']:.2f} (TFLOPS ratio)" if projected["flops_ratio"]
                else "kept as measured (TFLOPS unknown: pass --tflops)")  # fmt: skip
    per_step = projected["generation_s_per_step"] + projected["rest_s_per_step"]
    print(
        f"  projected ({TARGET.name}, {TARGET.bandwidth / GB:.0f} GB/s, {TARGET.bf16_flops / 1e12:.0f} TFLOPS): "
        f"generation {result['generation_s_per_step']:.2f} -> {projected['generation_s_per_step']:.2f} s, "
        f"rest {result['rest_s_per_step']:.2f} -> {projected['rest_s_per_step']:.2f} s: {steps} x {per_step:.2f} s = "
        f"{format_duration(projected['epoch_s'])}{toy_note}"
    )
    fits = projected["peak_memory_fits"]
    memory = "" if fits is None else (
        f"; peak reserved memory {format_bytes(result['peak_reserved_bytes'])} "
        f"{'fits' if fits else 'does NOT fit'} in 24 GB"
    )  # fmt: skip
    print(
        f"  (a projection, not a measurement: generation's limit time x {projected['bandwidth_ratio']:.2f} (bandwidth "
        f"ratio), rest's {rest_how}, the time above the limits kept as measured; with all generation time scaled by "
        f"bandwidth: {format_duration(projected['epoch_s_all_generation_scaled'])}{memory})"
    )


def headline(report: dict[str, Any]) -> str:
    """The last line: the epoch estimate, or without training the best evaluation speed."""
    device, toy = report["device"]["name"], report["settings"]["toy"]
    suffix = " -- toy sizes" if toy else ""
    epoch = report.get("epoch")
    if epoch:
        line = f"epoch estimate ({TRAIN_PATH}): {format_duration(epoch['measured_s'])} on {device} (measured)"
        if epoch["projected"]:
            line += f", {format_duration(epoch['projected']['epoch_s'])} on {TARGET.name} (projected)"
        return line + suffix
    best = max(report["eval"], key=lambda r: r["tokens_per_s"])
    return (
        f"eval: {best['tokens_per_s']:.0f} generated tokens/s at batch {best['batch_size']} on {device} (measured), "
        f"{GSM8K_TEST_PROMPTS} test prompts in {format_duration(best['test_set_s'])} worst case{suffix}"
    )
