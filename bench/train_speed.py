"""How fast does the CPU train the real model? A SmolLM2 GRPO step and an SFT run, split and held against limits.

    python bench/train_speed.py --dataset_name ../shared/data/gsm8k
    # before/after in one run on one machine: another commit's code checked out beside this one
    git worktree add /tmp/before 6d3cfae
    python bench/train_speed.py --dataset_name ../shared/data/gsm8k --code /tmp/before --code .
    python bench/train_speed.py --dataset_name ../shared/data/gsm8k --profile      # + a GRPO step's top operators
    python bench/train_speed.py --greedy_check 32 --grpo_steps 0 --sft_samples 0   # packed weights: the same tokens?
    # allocators side by side on this code: glibc's malloc and each library GRPO_ALLOCATOR can name
    python bench/train_speed.py --allocator glibc --allocator /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4

Each code folder's own train.py and sft.py run as a user runs them (a process of their own, with the allocator
that code chooses), on the same model (models/SmolLM2-135M-Instruct: python fetch_model.py), data and settings:
- GRPO (train.py, recipes/smollm2-135m-grpo.yaml): --grpo_steps optimizer steps of 2 problems x 4 completions of up
  to 200 tokens, no held-out evaluation; the first step is left out as warm-up. The base model rarely stops
  before 200 tokens, so every code version generates about as many tokens. Per completion token: the whole step,
  generation (train.py's generation_time), rewards, and forward, backward and update (the rest).
- SFT (sft.py, recipes/smollm2-135m-sft.yaml): --sft_samples cold-start answers, batch 8: seconds per token.
Beside each: the share of this machine's limits it reaches (roofline.py, measured here): generation against
reading the weights and KV cache once per decoding step (bandwidth), training against 2 x parameters FLOPs per
token for the forward pass and as many for the backward pass to the activations. Peak resident memory and the
CPU time spent in the kernel come from the operating system (getrusage of each run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchutil import GSM8K, REPO_DIR, cpu_name, gsm8k_prompts, run_measured

import allocator
from run_metrics import read_jsonl, step_entries

MODEL_DIR = REPO_DIR / "models" / "SmolLM2-135M-Instruct"
COMPLETIONS = 8  # per GRPO step: 2 problems x 4
GRPO_WORKLOAD = ["--num_generations", "4", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
                 "--max_completion_length", "200", "--eval_holdout", "0", "--save_merged", "false", "--seed", "0",
                 "--print_sample_every", "0", "--save_steps", "1000"]  # fmt: skip
SFT_WORKLOAD = ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--seed", "0",
                "--save_steps", "1000", "--logging_steps", "1"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/train_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", default=str(GSM8K), help="GSM8K folder (default ../shared/data/gsm8k)")
    parser.add_argument("--model", default=str(MODEL_DIR), help="the model folder (default models/SmolLM2-135M-Instruct)")
    parser.add_argument("--code", action="append", help="a folder holding the project's code (repeat; default: this one)")
    parser.add_argument("--allocator", action="append",
                        help="run this folder's code with GRPO_ALLOCATOR set to this (glibc, or a library path; repeat)")
    parser.add_argument("--grpo_steps", type=int, default=3, help="GRPO optimizer steps per run (default 3; 0: none)")
    parser.add_argument("--sft_samples", type=int, default=24, help="SFT answers per run, batch 8 (default 24; 0: none)")
    parser.add_argument("--profile", action="store_true", help="also profile one GRPO step of this folder's code")
    parser.add_argument("--greedy_check", type=int, default=0, metavar="N",
                        help="also decode N GSM8K problems greedily (evaluate.py's path) with and without packed weights")
    parser.add_argument("--output_dir", default="outputs/train-speed", help="where the runs go (emptied first)")
    return parser.parse_args()


def grpo_run(code: Path, args: argparse.Namespace, out: Path, env: dict[str, str]) -> dict:
    """train.py's GRPO steps: medians per step and per completion token, after the first step."""
    command = [sys.executable, "train.py", "--config", "recipes/smollm2-135m-grpo.yaml", "--model_name_or_path",
               args.model, "--dataset_name", args.dataset_name, "--output_dir", str(out), "--max_steps",
               str(args.grpo_steps), *GRPO_WORKLOAD]  # fmt: skip
    usage = run_measured(command, code, out.with_suffix(".log"), env)
    entries = step_entries(read_jsonl(out / "metrics.jsonl")[0])
    # trl's num_tokens counts prompt and completion tokens from the start of the run.
    totals = [0] + [e["num_tokens"] for e in entries]
    steps = [{**e, "tokens": totals[i + 1] - totals[i]} for i, e in enumerate(entries)][1:]
    median = {key: statistics.median(e[key] for e in steps) for key in ("step_time", "generation_time", "reward_time", "tokens")}
    median["rest_time"] = median["step_time"] - median["generation_time"] - median["reward_time"]
    median["completion_tokens"] = statistics.median(e["completions/mean_length"] * COMPLETIONS for e in steps)
    return {**usage, **median, "steps": len(steps)}


def sft_run(code: Path, args: argparse.Namespace, out: Path, env: dict[str, str]) -> dict:
    """sft.py on --sft_samples answers: its train_runtime per trained token."""
    command = [sys.executable, "sft.py", "--config", "recipes/smollm2-135m-sft.yaml", "--model_name_or_path",
               args.model, "--dataset_name", args.dataset_name, "--output_dir", str(out), "--max_samples",
               str(args.sft_samples), *SFT_WORKLOAD]  # fmt: skip
    usage = run_measured(command, code, out.with_suffix(".log"), env)
    entries = read_jsonl(out / "metrics.jsonl")[0]
    runtime = next(e["train_runtime"] for e in entries if "train_runtime" in e)
    tokens = max(e.get("num_tokens", 0) for e in entries)
    return {**usage, "train_runtime": runtime, "tokens": tokens}


def limits_of(model_dir: str) -> dict:
    """This machine's measured float32 limits and the model's sizes (what the limits are computed from)."""
    import torch
    from benchutil import model_costs
    from transformers import AutoModelForCausalLM

    from roofline import measure_limits

    limits = measure_limits("cpu", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {"limits": limits, **model_costs(model)}


def against_limits(grpo: dict | None, sft: dict | None, machine: dict) -> dict:
    """Each measured time beside the least time the machine's limits allow for the same work."""
    from roofline import decode_limit_seconds, training_flops

    limits, found = machine["limits"], {}
    if grpo:
        rows, new = COMPLETIONS, grpo["completion_tokens"] / COMPLETIONS
        prompt = (grpo["tokens"] - grpo["completion_tokens"]) / COMPLETIONS
        decode = decode_limit_seconds(rows, prompt, round(new), limits.bandwidth, machine["param_bytes"], machine["kv_per_token"])
        train = training_flops(machine["params"], grpo["tokens"], False, 0.0) / limits.flops
        found["generation_of_limit"] = decode / grpo["generation_time"]
        found["training_of_limit"] = train / grpo["rest_time"]
    if sft:
        found["sft_of_limit"] = training_flops(machine["params"], sft["tokens"], False, 0.0) / limits.flops / sft["train_runtime"]
    return found


def report(code: str, grpo: dict | None, sft: dict | None, shares: dict) -> list[str]:
    """The lines of one code folder's figures."""
    lines = [f"{code}"]
    if grpo:
        per_token = 1000 / grpo["completion_tokens"]
        lines += [
            f"  GRPO step       {grpo['step_time']:7.2f} s  ({per_token * grpo['step_time']:6.1f} ms per completion token, "
            f"{grpo['completion_tokens']:.0f} completion tokens, medians of {grpo['steps']} steps)",
            f"    generation    {grpo['generation_time']:7.2f} s  ({per_token * grpo['generation_time']:6.1f} ms/token, "
            f"{grpo['completion_tokens'] / grpo['generation_time']:5.1f} tokens/s, "
            f"{100 * shares['generation_of_limit']:4.1f} % of the bandwidth limit)",
            f"    rewards       {1000 * grpo['reward_time']:7.2f} ms",
            f"    fwd+bwd+update{grpo['rest_time']:7.2f} s  ({per_token * grpo['rest_time']:6.1f} ms/token, "
            f"{100 * shares['training_of_limit']:4.1f} % of the FLOP limit)",
            f"    process       kernel {grpo['kernel']:.0f} s of {grpo['user'] + grpo['kernel']:.0f} s CPU time, "
            f"peak {grpo['peak_gb']:.1f} GB resident; allocator: {grpo['allocator']}",
        ]  # fmt: skip
    if sft:
        lines += [
            f"  SFT             {1000 * sft['train_runtime'] / sft['tokens']:7.2f} ms per token ({sft['tokens']} tokens in "
            f"{sft['train_runtime']:.1f} s, {sft['tokens'] / sft['train_runtime']:.0f} tokens/s, "
            f"{100 * shares['sft_of_limit']:4.1f} % of the FLOP limit)",
            f"    process       kernel {sft['kernel']:.0f} s of {sft['user'] + sft['kernel']:.0f} s CPU time, "
            f"peak {sft['peak_gb']:.1f} GB resident; allocator: {sft['allocator']}",
        ]  # fmt: skip
    return lines


def profile_grpo_step(args: argparse.Namespace, out: Path, top: int = 15) -> str:
    """One GRPO step of this folder's code (the second: after warm-up) under torch.profiler: the top operators."""
    import torch
    from transformers import TrainerCallback

    import train

    class ProfileStep(TrainerCallback):
        def __init__(self) -> None:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.table = ""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.profiler.__exit__(None, None, None)
                self.table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)

    profile = ProfileStep()
    argv = ["--config", str(REPO_DIR / "recipes" / "smollm2-135m-grpo.yaml"), "--model_name_or_path", args.model,
            "--dataset_name", args.dataset_name, "--output_dir", str(out), "--max_steps", "2", *GRPO_WORKLOAD]  # fmt: skip
    train.main(argv, extra_callbacks=[profile])
    return profile.table


def main() -> None:
    args = parse_args()
    allocator.use_fast_allocator()  # for the profile, which runs in this process; the runs choose their own
    codes = [Path(code).resolve() for code in (args.code or [str(REPO_DIR)])]
    for code in codes:
        if not (code / "train.py").is_file():
            raise SystemExit(f"train_speed.py: error: --code {code}: no train.py there")
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"train_speed.py: error: no model in {args.model}: run python fetch_model.py first")
    out = Path(args.output_dir).resolve()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    machine = limits_of(args.model)
    print(f"machine: {cpu_name()}; {machine['limits'].describe()}", flush=True)
    # (label, code folder, environment): each code as it runs, or this folder's code under each allocator asked for.
    variants = [(str(code), code, {}) for code in codes] if not args.allocator else [
        (f"{REPO_DIR} with GRPO_ALLOCATOR={choice}", REPO_DIR, {allocator.CHOICE_ENV: choice}) for choice in args.allocator
    ]  # fmt: skip
    results = []
    for number, (label, code, env) in enumerate(variants):
        grpo = grpo_run(code, args, out / f"grpo-{number}", env) if args.grpo_steps else None
        sft = sft_run(code, args, out / f"sft-{number}", env) if args.sft_samples else None
        shares = against_limits(grpo, sft, machine)
        results.append({"code": label, "grpo": grpo, "sft": sft, "shares": shares})
        print("\n".join(report(label, grpo, sft, shares)), flush=True)
    (out / "train_speed.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.profile:
        print("\nprofile of one GRPO step (this folder's code), by self CPU time:\n" + profile_grpo_step(args, out / "profile"))
    if args.greedy_check:
        print("\n" + greedy_check(args, args.greedy_check), flush=True)
    if len(results) > 1:
        print(f"\nlast against first code: {speedups(results[0], results[-1])}")


def greedy_check(args: argparse.Namespace, count: int, max_new_tokens: int = 128) -> str:
    """evaluate.py's greedy decoding of `count` problems, batch 16, without and with cpu_decode.py's packed weights."""
    import time

    import generation

    source = generation.ModelSource("base", args.model, args.model)
    model, tokenizer = generation.load_hf_model(source), generation.load_tokenizer(args.model)
    prompts, runs = gsm8k_prompts(args.dataset_name, count), {}
    for packed in (False, True):
        started = time.perf_counter()
        completions = generation.generate_with_model(model, tokenizer, prompts, max_new_tokens, 16, pack=packed)
        runs[packed] = ([c.token_ids for c in completions], time.perf_counter() - started)
    same = sum(a == b for a, b in zip(runs[False][0], runs[True][0]))
    tokens = sum(map(len, runs[False][0]))
    return (f"greedy decoding of {count} GSM8K problems ({tokens} tokens, batch 16): {runs[False][1]:.1f} s as stored, "
            f"{runs[True][1]:.1f} s packed ({runs[False][1] / runs[True][1]:.2f}x); the same tokens in {same}/{count} rows")


def speedups(before: dict, after: dict) -> str:
    """Per-token ratios of two code folders' runs: how many times faster `after` is."""

    def per_token(result: dict, key: str) -> float:
        return result["grpo"][key] / result["grpo"]["completion_tokens"]

    ratios = []
    if before["grpo"] and after["grpo"]:
        for name, key in (("GRPO per completion token", "step_time"), ("generation", "generation_time"),
                          ("fwd+bwd+update", "rest_time")):  # fmt: skip
            ratios.append(f"{name} {per_token(before, key) / per_token(after, key):.2f}x")
    if before["sft"] and after["sft"]:
        sft_seconds = [r["sft"]["train_runtime"] / r["sft"]["tokens"] for r in (before, after)]
        ratios.append(f"SFT per token {sft_seconds[0] / sft_seconds[1]:.2f}x")
    return ", ".join(ratios)

if __name__ == "__main__":
    main()
