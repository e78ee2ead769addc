"""GRPO step speed on the CPU, train.py's hf path before and after attention.py, on the same seed and rewards.

    # From the repo root, with ../shared (the Qwen2.5 tokenizer, GSM8K): the mid-size model, 2 threads,
    # 6 steps x 2 rounds per variant (~10 minutes on 2 idle cores)
    python bench/grpo_step.py
    # More rounds, another setting on the "after" side only (any train.py / GRPOConfig flag)
    python bench/grpo_step.py --rounds 3 --after_args='--cache_implementation static'
    # Toy size (tiny model and tokenizer, sample problems), as the test suite runs it
    python bench/grpo_step.py --toy --max_steps 2 --rounds 1 --threads 1

The model is a random Qwen2 of the mid size that a CPU trains in seconds per step and whose cost is mostly the
vocabulary, as the real one's is at this size: hidden 256, 4 layers, 4 heads / 2 KV heads, MLP 1024, and Qwen2.5's
151,936-row tied embedding (39M of its 43M parameters), with the real tokenizer and GSM8K train prompts. Each
variant is `train.main(["--smoke", ...])` in a fresh subprocess: 2 prompts x 2 completions per step, 64-token
completions (sampled at temperature 0.9), LoRA r 8, beta 0.04 (a reference forward each step), loss "grpo",
seed 1907. The variants:
    before  --attn_implementation sdpa: transformers' own SDPA attention, the code before attention.py
    after   train.py's defaults (attention.py's grouped-query SDPA), plus --after_args
Rounds alternate the order, so load drifting on a shared machine hits both alike.

Figures: seconds per step (the median over steps after the first, from a callback), of which generation (trl's
GRPOTrainer._generate_single_turn, timed by bench/gpu_bench.py's wrapper) and the rest; the CPU time the process
spent per step (steadier than wall time when other processes share the cores); peak RSS; the load average.
Check: every step's rewards and every completion's text are the same in all runs (completions from the run's
completions/*.parquet), so both sides did the same work; exit 1 if not.

And what trl 1.16's fused LM head costs on a machine without Triton: there it scores every prompt and completion
position (`_use_triton` false: "every position is scored instead"), where with Triton it scores the completion
positions only. Each worker, right after its steps (so under the same load), times trl's own chunked log-prob
function on one step's shapes, the policy's forward + backward and the reference forward, on all positions and on
the completion positions alone.
The last line is the headline: before / after seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

import benchutil  # noqa: E402  (bench/ is on sys.path when run as a script)
from benchutil import GSM8K, QWEN_TOKENIZER, peak_rss_mib  # noqa: E402

benchutil.go_offline()

VARIANTS = ("before", "after")

MID_SHAPE = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768, initializer_range=0.1,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Worker: one variant in a fresh process


def step_clock() -> Any:
    """A TrainerCallback noting each optimizer step's wall time and this process's CPU time.

    On a shared machine the wall time of a step grows with everyone else's load; the CPU time the process itself
    spent (all its threads) moves much less, and with one thread it is the step's work.
    """
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._start = (0.0, 0.0)

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start[0])
            self.cpu_seconds.append(time.process_time() - self._start[1])

    return StepClock()


def worker(args: argparse.Namespace) -> None:
    """train.main with the variant's flags; step and generation times, rewards and completions as JSON."""
    import pyarrow.parquet as pq
    from gpu_bench import timed_trl_generation

    import train

    output_dir = Path(str(Path(args.out).with_suffix("")) + "-run")
    flags = {
        "model_name_or_path": args.model_dir,
        "dataset_name": args.dataset_name,
        "output_dir": output_dir,
        "max_steps": args.max_steps,
        "max_completion_length": args.max_completion_length,
        "max_samples": 2 * args.max_steps,
        "save_steps": 10**9,
        "logging_steps": 1,
    }
    argv = ["--smoke", *(item for name, value in flags.items() for item in (f"--{name}", str(value)))]
    if args.variant == "before":
        argv += ["--attn_implementation", "sdpa"]
    else:
        argv += shlex.split(args.after_args)
    timer = step_clock()
    with timed_trl_generation() as generations:
        train.main(argv, extra_callbacks=[timer])
    logs = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    completions = [
        row["completion"]
        for path in sorted((output_dir / "completions").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    rows = 4  # --smoke: 2 prompts x 2 completions per step
    prompt_len = round(statistics.mean(g["tokens"] - g["completion_tokens"] for g in generations) / rows)
    # Right after training, in the same process: the same load as the steps it is compared with.
    lm_head = lm_head_scoring_seconds(Path(args.model_dir), rows, prompt_len, args.max_completion_length)
    result = {
        "step_s": timer.seconds,
        "step_cpu_s": timer.cpu_seconds,
        "lm_head": {**lm_head, "rows": rows, "prompt_len": prompt_len},
        "generation_s": [sum(g["seconds"] for g in generations if g["step"] == n) for n in range(1, args.max_steps + 1)],
        "rewards": [entry["reward"] for entry in logs if "reward" in entry],
        "completions": completions,
        "peak_rss_mib": peak_rss_mib(),
    }
    Path(args.out).write_text(json.dumps(result, default=str))


def run_worker(variant: str, args: argparse.Namespace, model_dir: Path, out: Path) -> dict:
    flags = {
        "worker": variant,
        "model_dir": model_dir,
        "dataset_name": args.dataset_name,
        "max_steps": args.max_steps,
        "max_completion_length": args.max_completion_length,
        "threads": args.threads,
        "after_args": args.after_args,
    }
    result = benchutil.run_worker(__file__, flags, out, variant)
    later = slice(1, None) if len(result["step_s"]) > 1 else slice(None)  # the first step pays for warm-up
    result["median_step_s"] = statistics.median(result["step_s"][later])
    result["median_step_cpu_s"] = statistics.median(result["step_cpu_s"][later])
    result["median_generation_s"] = statistics.median(result["generation_s"][later])
    return result


# ---------------------------------------------------------------------------------------------------------
# The model, and trl's fused LM head without Triton


def build_model(folder: Path, toy: bool) -> None:
    """The mid-size random model with the real Qwen2.5 tokenizer, or smoke's tiny model (--toy)."""
    benchutil.build_random_model(folder, None if toy else MID_SHAPE)


def lm_head_scoring_seconds(model_dir: Path, rows: int, prompt_len: int, completion_len: int, repeat: int = 3) -> dict:
    """trl's chunked log-probs on one step's shapes: policy forward + backward and reference forward, best of `repeat`.

    `all`: every position of `rows` x (prompt + completion) tokens, what trl does without Triton; `completion`: the
    completion positions only, what it does with Triton.
    """
    import torch
    from transformers import AutoConfig
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction

    config = AutoConfig.from_pretrained(model_dir)
    weight = torch.randn(config.vocab_size, config.hidden_size) * 0.02
    seconds = {}
    for name, positions in (("all", rows * (prompt_len + completion_len)), ("completion", rows * completion_len)):
        hidden = torch.randn(positions, config.hidden_size, requires_grad=True)
        labels = torch.randint(config.vocab_size, (positions,))

        def score(grad: bool) -> None:
            with torch.set_grad_enabled(grad):
                log_probs = _ChunkedLogProbFunction.apply(
                    hidden, weight, None, labels, 0.9, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ("log_probs", "entropy")
                )[0]
                if grad:
                    log_probs.sum().backward()

        best = best_cpu = float("inf")
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            score(grad=True)  # the policy: loss forward and backward
            score(grad=False)  # the reference model (beta > 0)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        seconds[name], seconds[f"{name}_cpu"] = best, best_cpu
    return seconds


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_steps", type=int, default=6, help="GRPO steps per run (default 6)")
    parser.add_argument("--max_completion_length", type=int, default=64, help="completion tokens (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the timed processes (default 2)")
    parser.add_argument("--after_args", default="", help="extra train.py flags for the 'after' variant only")
    parser.add_argument("--toy", action="store_true", help="smoke's tiny model and the sample problems")
    parser.add_argument("--dataset_name", help=f"GSM8K-format data (default {GSM8K}; --toy: samples/gsm8k)")
    # Internal: one variant in this (fresh) process.
    parser.add_argument("--worker", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        import torch

        torch.set_num_threads(args.threads)
        worker(args)
        return 0
    if min(args.max_steps, args.max_completion_length, args.rounds, args.threads) < 1:
        parser.error("--max_steps, --max_completion_length, --rounds and --threads must be positive")
    if not args.toy and not QWEN_TOKENIZER.is_dir():
        parser.error(f"no Qwen2.5 tokenizer at {QWEN_TOKENIZER}: run with --toy")
    from smoke import SAMPLE_DATA_DIR

    args.dataset_name = args.dataset_name or str(SAMPLE_DATA_DIR if args.toy or not GSM8K.is_dir() else GSM8K)

    import torch
    import transformers
    import trl

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}; {os.cpu_count()} CPUs, {args.threads} torch threads; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="grpo_step-") as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, args.toy)
        model_name = "tiny (smoke)" if args.toy else "mid-size (hidden 256, 4 layers, Qwen2.5 vocabulary)"
        print(
            f"model: {model_name}; data {args.dataset_name}; {args.max_steps} steps of 2 prompts x 2 completions, "
            f"{args.max_completion_length} tokens; before = --attn_implementation sdpa, after = defaults"
            + (f" + {args.after_args}" if args.after_args else "")
        )
        for round_index in range(args.rounds):
            for variant in VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]:
                result = run_worker(variant, args, model_dir, Path(tmp) / f"{variant}-{round_index}.json")
                runs[variant].append(result)
                print(
                    f"  round {round_index + 1} {variant:>6}: {result['median_step_s']:.2f} s/step, generation "
                    f"{result['median_generation_s']:.2f} s; CPU time {result['median_step_cpu_s']:.2f} s/step; LM head "
                    f"scoring {result['lm_head']['all']:.2f} s (completions only {result['lm_head']['completion']:.2f} "
                    f"s); peak RSS {result['peak_rss_mib']:.0f} MiB; load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        reference = runs["before"][0]

    # --- check: the same rewards and completions everywhere --------------------------------------------------
    same = all(
        r["rewards"] == reference["rewards"] and r["completions"] == reference["completions"]
        for v in VARIANTS
        for r in runs[v]
    )
    if same:
        print(
            f"\ncheck: the same rewards ({len(reference['rewards'])} steps) and the same "
            f"{len(reference['completions'])} completions in every run"
        )
    else:
        print("\nCHECK FAILED: rewards or completions differ between runs:")
        for v in VARIANTS:
            for i, r in enumerate(runs[v]):
                print(f"  {v} round {i + 1}: rewards " + " ".join(f"{x:.3f}" for x in r["rewards"]))

    # --- figures ---------------------------------------------------------------------------------------------
    def best(variant: str, key: str) -> float:
        return min(r[key] for r in runs[variant])

    print(
        f"\nbest of {args.rounds} round(s); per step = median of steps 2..{args.max_steps}; "
        f"load average {os.getloadavg()[0]:.1f} at the end:"
    )
    for v in VARIANTS:
        step, generation = best(v, "median_step_s"), best(v, "median_generation_s")
        print(
            f"  {v:>6}: {step:.2f} s/step = generation {generation:.2f} s ({100 * generation / step:.0f}%) "
            f"+ rest {step - generation:.2f} s"
        )
    fastest = min(runs["after"], key=lambda r: r["median_step_cpu_s"])
    lm_head = fastest["lm_head"]
    waste = lm_head["all_cpu"] - lm_head["completion_cpu"]
    print(
        f"\ntrl's fused LM head without Triton, one step's shapes ({lm_head['rows']} rows x {lm_head['prompt_len']} "
        f"prompt + {args.max_completion_length} completion tokens; policy forward + backward, reference forward), "
        f"timed in the 'after' run of least CPU time per step, right after its steps: CPU time {lm_head['all_cpu']:.2f} "
        f"s scoring every position, {lm_head['completion_cpu']:.2f} s scoring completions only (wall "
        f"{lm_head['all']:.2f} / {lm_head['completion']:.2f} s); the prompt positions cost {waste:.2f} s, "
        f"{100 * waste / fastest['median_step_cpu_s']:.0f}% of its {fastest['median_step_cpu_s']:.2f} s of CPU time per step"
    )
    cpu = {v: best(v, "median_step_cpu_s") for v in VARIANTS}
    print(f"CPU time per step (this process, all threads), best of rounds: before {cpu['before']:.2f} s, after {cpu['after']:.2f} s")
    ratio = best("before", "median_step_s") / best("after", "median_step_s")
    print(
        f"GRPO step before vs after: {ratio:.2f}x wall time, {cpu['before'] / cpu['after']:.2f}x CPU time "
        f"({model_name}, CPU, {args.threads} threads)"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
