"""gpu_bench.py's training figures: train.py's own run, with its optimizer steps and its generation timed."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchutil import decode_limit, peak_memory, reset_peak_memory, step_timer, synchronize
from gpu_report import format_bytes, percent
from options import exit_with
from roofline import training_flops

TOY_GRADIENT_ACCUMULATION = 2  # 2 prompts x 2 completions per toy step (the recipe: 32 prompts)
TINY_TOKENIZER = "tiny"  # --tokenizer value for tiny_model.build_tiny_tokenizer()
# train.py's resolved settings the report repeats (from the run's run_config.json)
SETTINGS = (
    "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length",
    "optim", "bf16", "gradient_checkpointing", "beta", "use_vllm",
)  # fmt: skip


@contextmanager
def timed_trl_generation() -> Iterator[list[dict[str, Any]]]:
    """Time every GRPOTrainer._generate_single_turn call (all of a step's completions, one generate), per step."""
    from trl.trainer import grpo_trainer

    calls: list[dict[str, Any]] = []
    original = grpo_trainer.GRPOTrainer._generate_single_turn

    def generate_single_turn(self: Any, prompt_ids: list, *args: Any, **kwargs: Any) -> Any:
        synchronize()
        start = time.perf_counter()
        completion_ids, logprobs = original(self, prompt_ids, *args, **kwargs)
        synchronize()
        completion_tokens = sum(len(c) for c in completion_ids)
        calls.append({
            "step": self.state.global_step + 1,  # the optimizer step this generation feeds
            "seconds": time.perf_counter() - start, "batch": len(completion_ids),
            "prompt_len": max(len(p) for p in prompt_ids),  # left-padded to the longest
            "steps": max(len(c) for c in completion_ids), "completion_tokens": completion_tokens,
            "tokens": sum(len(p) for p in prompt_ids) + completion_tokens,
        })  # fmt: skip
        return completion_ids, logprobs

    grpo_trainer.GRPOTrainer._generate_single_turn = generate_single_turn
    try:
        yield calls
    finally:
        grpo_trainer.GRPOTrainer._generate_single_turn = original


def train_argv(args: argparse.Namespace, model_dir: Path, output_dir: Path, prompts_per_step: int) -> list[str]:
    """train.py's flags: the recipe's settings, with the random model, no vLLM and no checkpoints."""
    argv = [
        "--backend", "hf", "--model_name_or_path", str(model_dir), "--dataset_name", args.dataset_name,
        "--output_dir", str(output_dir), "--report_to", "none",
        "--use_vllm", "false",  # the hf backend's own generate: there is no vLLM on the GPU box
        "--max_steps", str(args.train_steps), "--max_samples", str(prompts_per_step * args.train_steps),
        "--save_steps", str(10**9), "--logging_steps", "1", "--max_completion_length", str(args.max_new_tokens),
        "--max_seq_length", str(max(1024, 512 + args.max_new_tokens)),
        "--eval_holdout", "0",  # training steps only; the held-out evaluation is timed apart
    ]  # fmt: skip
    if args.toy:
        argv += ["--gradient_accumulation_steps", str(TOY_GRADIENT_ACCUMULATION)]
    if args.tokenizer == TINY_TOKENIZER:
        # The tiny tokenizer spends more tokens on the system prompt than Qwen's (as train.py --smoke).
        argv += ["--max_prompt_length", "512"]
    return argv


def run_train(args: argparse.Namespace, model_dir: Path, device: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """train.main in-process for --train_steps steps; seconds per step, split into generation and the rest."""
    import train
    from data import load_raw_split
    from options import read_layers

    config = read_layers([], train.RECIPE).config
    per_step = config["per_device_train_batch_size"] // config["num_generations"]
    prompts_per_step = per_step * (TOY_GRADIENT_ACCUMULATION if args.toy else config["gradient_accumulation_steps"])
    available = len(load_raw_split(args.dataset_name, "train"))
    if available < prompts_per_step:
        exit_with("gpu_bench.py", f"{args.dataset_name}: {available} training problems, one step needs {prompts_per_step}: "
             "pass the full GSM8K")  # fmt: skip

    timer = step_timer()
    with tempfile.TemporaryDirectory() as tmp, timed_trl_generation() as generations:
        output_dir = Path(tmp) / "run"
        reset_peak_memory()
        with contextlib.redirect_stdout(sys.stderr):  # train.py's log to stderr: stdout holds the figures
            argv = train_argv(args, model_dir, output_dir, prompts_per_step)
            # On the CPU (toy run) train.py must be told: it refuses to start the real run there by accident.
            train.main(argv + ([] if device["cuda"] else ["--use_cpu"]), extra_callbacks=[timer])
        memory = peak_memory()
        run_config = json.loads((output_dir / "run_config.json").read_text())["training"]
        logs = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    trl_step_time = {entry["step"]: entry["step_time"] for entry in logs if "step_time" in entry}

    steps = []
    for number, seconds in enumerate(timer.seconds, start=1):
        mine = [g for g in generations if g["step"] == number]
        generation = sum(g["seconds"] for g in mine)
        step = {
            "step": number, "seconds": seconds, "generation_s": generation, "rest_s": seconds - generation,
            "completions": sum(g["batch"] for g in mine), "completion_tokens": sum(g["completion_tokens"] for g in mine),
            "decode_slots": sum(g["batch"] * g["steps"] for g in mine), "tokens": sum(g["tokens"] for g in mine),
            "trl_step_time_s": trl_step_time.get(number), "generation_limit_s": None, "rest_limit_s": None,
        }  # fmt: skip
        if device["bandwidth"]:
            _, step["generation_limit_s"] = decode_limit(mine, device["bandwidth"], info["param_bytes"],
                                                         info["kv_bytes_per_token"])  # fmt: skip
        if device["bf16_flops"]:
            flops = training_flops(info["parameters"], step["tokens"], run_config["gradient_checkpointing"],
                                   run_config["beta"])  # fmt: skip
            step["rest_limit_s"] = flops / device["bf16_flops"]
        steps.append(step)
    timed = steps[1:] if len(steps) > 1 else steps  # the first step pays for warm-up
    if not all(s["completions"] for s in timed):
        exit_with("gpu_bench.py", "trl's GRPOTrainer._generate_single_turn did not run in every step: trl 1.15 or 1.16?")
    generation_s = sum(s["generation_s"] for s in timed)

    def mean(key: str) -> float | None:
        values = [s[key] for s in timed]
        return None if any(v is None for v in values) else sum(values) / len(values)

    return {
        "steps": steps,
        "timed_steps": [s["step"] for s in timed],
        "seconds_per_step": mean("seconds"),
        "generation_s_per_step": mean("generation_s"),
        "rest_s_per_step": mean("rest_s"),
        "generation_tokens_per_s": sum(s["completion_tokens"] for s in timed) / generation_s,
        "generation_limit_tokens_per_s": (
            sum(s["decode_slots"] for s in timed) / sum(s["generation_limit_s"] for s in timed)
            if device["bandwidth"] else None
        ),  # fmt: skip
        "generation_limit_s_per_step": mean("generation_limit_s"),
        "rest_limit_s_per_step": mean("rest_limit_s"),
        "trl_step_time_s": mean("trl_step_time_s"),
        "prompts_per_step": prompts_per_step,
        "completions_per_step": mean("completions"),
        "settings": {key: run_config[key] for key in SETTINGS},
        **memory,
    }


def print_train(result: dict[str, Any]) -> None:
    """The training table: one line per step, its split, and the limits of each part."""
    s = result["settings"]
    print(
        f"\ntrain (measured): train.main, --backend hf, LoRA r=32, {s['num_generations']} generations x "
        f"{result['prompts_per_step']} prompts per step, {s['max_completion_length']} completion tokens, "
        f"grad-accum {s['gradient_accumulation_steps']}, optim {s['optim']}, bf16 {s['bf16']}, beta {s['beta']}, "
        f"use_vllm {s['use_vllm']}"
    )
    print(f"{'step':>4} {'total':>9} {'generation':>11} {'rest':>9} {'completions':>11} {'trl step_time':>13}")
    for step in result["steps"]:
        trl_time = f"{step['trl_step_time_s']:.2f}s" if step["trl_step_time_s"] is not None else "n/a"
        warm = "" if step["step"] in result["timed_steps"] else "  (warm-up, left out)"
        print(f"{step['step']:>4} {step['seconds']:>8.2f}s {step['generation_s']:>10.2f}s {step['rest_s']:>8.2f}s "
              f"{step['completions']:>11} {trl_time:>13}{warm}")  # fmt: skip
    gen, rest = result["generation_s_per_step"], result["rest_s_per_step"]
    gen_limit, rest_limit = result["generation_limit_s_per_step"], result["rest_limit_s_per_step"]
    print(f"per step: {result['seconds_per_step']:.2f} s = generation {gen:.2f} s + rest {rest:.2f} s")
    tokens_per_s = result["generation_tokens_per_s"]
    if gen_limit:
        limit = result["generation_limit_tokens_per_s"]
        print(f"  generation: {tokens_per_s:.1f} tokens/s, limit {limit:.0f} tokens/s ({percent(tokens_per_s, limit)}; "
              f"{gen_limit:.2f} s per step at the limit)")  # fmt: skip
    else:
        print(f"  generation: {tokens_per_s:.1f} tokens/s (no limit: bandwidth unknown, pass --bandwidth_gbs)")
    if rest_limit:
        print(f"  rest (rewards, loss passes, optimizer): {rest_limit:.2f} s per step at the bf16 peak, "
              f"{percent(rest_limit, rest)} of the measured {rest:.2f} s")  # fmt: skip
    trl_time = f"{result['trl_step_time_s']:.2f} s" if result["trl_step_time_s"] is not None else "n/a"
    print(
        f"  peak memory: {format_bytes(result['peak_memory_bytes'])} allocated, "
        f"{format_bytes(result['peak_reserved_bytes'])} reserved; trl's step_time (its micro-steps only): {trl_time}"
    )
