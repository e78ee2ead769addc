"""Training overhead: train.py against a bare GRPOTrainer doing the same work, on the tiny model.

    # From the repo root, CPU, offline, under a minute: 10 GRPO steps of 32-token completions, 3 rounds
    python bench/train_overhead.py

    # Longer runs, more rounds, one torch thread (steadier on a busy machine)
    python bench/train_overhead.py --max_steps 20 --max_completion_length 64 --rounds 5 --threads 1

    # What train.py's recipe costs on top: e.g. without its console sample of completions
    python bench/train_overhead.py --threads 1 --train_args='--print_sample_every 0'

The two variants, each run in a fresh subprocess (order alternating between rounds):
    train.py  `train.main(["--smoke", "--model_name_or_path", TINY, "--max_steps", ...])`: the whole script,
              recipe + --smoke values, config checks, data loading, callbacks, run_config.json, final save
    bare      the minimal script one would write by hand (`bare_run` below): the same tiny model folder, the
              same 16 sample problems shuffled with the same seed, `rewards.custom_reward_func`, a GRPOConfig
              holding the values train.py resolves to (batch 4 = 2 prompts x 2 completions, 1 accumulation
              step, lr 1e-3, beta 0.04, loss grpo, temperature 0.9, no KL bias correction, seed, optimizer and
              schedule), LoRA r 8 / alpha 16 on all seven projections via peft_config, the model loaded with
              attention.py's attention as train.py loads it, then train() and save_model()

Seconds per step come from a callback (the wall-clock time from one step's end to the next, so everything a
step costs counts: generation, reward, backward, optimizer, callbacks, logging), given to train.py through
`train.main(argv, extra_callbacks=[...])` and to the bare trainer through `callbacks=[...]`.
trl's own `step_time` log key (only `training_step`: generation + forward/backward) is printed too.
Both use the median over steps after the first. Wall time = the whole subprocess, startup and imports
included. Peak RSS = each subprocess's own ru_maxrss.

On a shared CPU, torch's default threads (one per core) can run many times slower than one thread whenever
another process takes a core: `--threads 1` gives steadier figures there. The load average is printed.

Checks: train.py's resolved GRPOConfig (its run_config.json) is compared field by field with the bare one and
every difference is printed; both runs must log the same per-step rewards (same completions: same work).
The last line is the headline ratio, train.py / bare seconds per step (best round of each).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
# Run as `python bench/train_overhead.py` from the repo root: the repo's modules live one folder up.
sys.path.insert(0, str(REPO_DIR))

import benchutil  # noqa: E402  (bench/ is on sys.path when run as a script)
from benchutil import peak_rss_mib  # noqa: E402

benchutil.go_offline()

VARIANTS = ("train.py", "bare")
SEED = 1907  # the recipe's seed, which train.py --smoke keeps
# Fields that name places or are derived from them, not how training runs.
IGNORED_FIELDS = {"output_dir", "logging_dir", "run_name", "hub_model_id"}


# ---------------------------------------------------------------------------------------------------------
# Worker side: one variant in a fresh process


def step_timer(record: dict):
    """A callback that records when training starts, when each step ends, and every log entry, into `record`."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record["train_begin"] = time.perf_counter()
            record["step_ends"], record["logs"] = [], []

        def on_step_end(self, args, state, control, **kwargs):
            record["step_ends"].append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            record["logs"].append(dict(logs or {}))

    return StepTimer()


def bare_run(model_dir: str, output_dir: str, max_steps: int, max_completion_length: int, callback) -> dict:
    """A bare GRPOTrainer run with train.py --smoke's values; returns its GRPOConfig as a dict."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from attention import register
    from data import extract_hash_answer
    from prompts import build_messages
    from rewards import custom_reward_func
    from smoke import SAMPLE_DATA_DIR

    rows = [json.loads(line) for line in (SAMPLE_DATA_DIR / "train.jsonl").read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list(
        [
            {
                "question": r["question"],
                "prompt": build_messages(r["question"]),
                "answer": extract_hash_answer(r["answer"]),
            }
            for r in rows
        ]
    ).shuffle(seed=SEED)
    config = GRPOConfig(
        output_dir=output_dir,
        max_steps=max_steps,
        num_train_epochs=1,
        per_device_train_batch_size=4,  # completions: 2 prompts x 2 completions
        gradient_accumulation_steps=1,
        num_generations=2,
        max_completion_length=max_completion_length,
        learning_rate=1e-3,
        beta=0.04,
        loss_type="grpo",
        temperature=0.9,
        use_bias_correction_kl=False,
        vllm_importance_sampling_correction=False,
        seed=SEED,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        weight_decay=0.1,
        adam_beta2=0.99,
        warmup_steps=0,
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_steps=100_000,
        report_to="none",
    )
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    # The attention train.py's hf backend loads with (attention.py), so both sides do the same arithmetic.
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=register())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[custom_reward_func],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[callback],
    )
    trainer.train()
    trainer.save_model(output_dir)
    return config.to_dict()


def worker(args: argparse.Namespace) -> None:
    """Run one variant; write its timings, per-step logs, config and peak RSS as JSON to --out."""
    record: dict = {}
    output_dir = str(Path(args.out).with_suffix("")) + "-run"
    if args.variant == "train.py":
        import train

        flags = {
            "model_name_or_path": args.model_dir,  # the bench's tiny model, not one built inside output_dir
            "output_dir": output_dir,
            "max_steps": args.max_steps,
            "max_completion_length": args.max_completion_length,
            "save_steps": 100_000,
            "logging_steps": 1,
            "eval_holdout": 0,  # the bare trainer has no held-out evaluation to compare with
        }
        argv = ["--smoke", *(item for name, value in flags.items() for item in (f"--{name}", str(value)))]
        argv += shlex.split(args.train_args)
        train.main(argv, extra_callbacks=[step_timer(record)])
        config = json.loads(Path(output_dir, "run_config.json").read_text())["training"]
    else:
        config = bare_run(args.model_dir, output_dir, args.max_steps, args.max_completion_length, step_timer(record))
    ends = [record["train_begin"], *record["step_ends"]]
    logs = [entry for entry in record["logs"] if "reward" in entry]
    result = {
        "step_wall_s": [b - a for a, b in itertools.pairwise(ends)],
        "step_time_s": [entry.get("step_time") for entry in logs],
        "rewards": [entry["reward"] for entry in logs],
        "config": config,
        "peak_rss_mib": peak_rss_mib(),
    }
    Path(args.out).write_text(json.dumps(result, default=str))


# ---------------------------------------------------------------------------------------------------------
# Parent side


def run_worker(variant: str, args: argparse.Namespace, model_dir: Path, out: Path) -> dict:
    flags = {
        "worker": variant,
        "model_dir": model_dir,
        "max_steps": args.max_steps,
        "max_completion_length": args.max_completion_length,
        "threads": args.threads,
        "train_args": args.train_args,
    }
    start = time.perf_counter()
    result = benchutil.run_worker(__file__, flags, out, variant)
    wall_s = time.perf_counter() - start
    result["wall_s"] = wall_s
    later = result["step_wall_s"][1:] or result["step_wall_s"]  # "steps after the first"
    result["median_step_s"] = statistics.median(later)
    times = [t for t in result["step_time_s"][1:] or result["step_time_s"] if t is not None]
    result["median_step_time_s"] = statistics.median(times) if times else float("nan")
    return result


def config_differences(a: dict, b: dict) -> list[str]:
    """'field: a vs b' for every GRPOConfig field whose values differ (places ignored)."""
    return [
        f"{key}: {a.get(key)!r} vs {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in IGNORED_FIELDS and a.get(key) != b.get(key)  # both from JSON; 1 == 1.0
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_steps", type=int, default=10, help="GRPO steps per run (default: 10)")
    parser.add_argument("--max_completion_length", type=int, default=32, help="completion tokens (default: 32)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="fresh processes per variant; the best counts (default: 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in the timed processes (default 0: torch's own choice)"
    )
    parser.add_argument(
        "--train_args", default="", help="extra train.py flags, e.g. --train_args='--print_sample_every 0'"
    )
    # Internal: one variant in this (fresh) process.
    parser.add_argument("--worker", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        worker(args)
        return 0
    if min(args.max_steps, args.max_completion_length, args.rounds) < 1 or args.threads < 0:
        parser.error("--max_steps, --max_completion_length and --rounds must be positive")

    import torch
    import transformers
    import trl

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}; {os.cpu_count()} CPUs, {args.threads or torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        f"{args.max_steps} steps, 2 prompts x 2 completions of up to {args.max_completion_length} tokens per step, "
        f"tiny model, CPU, {args.rounds} round(s)"
        + (f"; train.py also gets: {args.train_args}" if args.train_args else "")
    )
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="train_overhead-") as tmp:
        from transformers.utils import logging

        from smoke import build_tiny_model

        logging.disable_progress_bar()  # "Writing model shards" in this process only

        model_dir = build_tiny_model(Path(tmp) / "tiny")  # the same folder for both variants
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]  # alternate, so drift hits both alike
            for variant in order:
                result = run_worker(variant, args, model_dir, Path(tmp) / f"{variant}-{round_index}.json")
                runs[variant].append(result)
                print(
                    f"  round {round_index + 1} {variant:>8}: {result['median_step_s']:.3f} s/step "
                    f"(trl step_time {result['median_step_time_s']:.3f}), wall {result['wall_s']:.1f} s, "
                    f"peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )

    # --- checks: the same configuration, the same work ---------------------------------------------------
    ok = True
    differences = config_differences(runs["train.py"][0]["config"], runs["bare"][0]["config"])
    print(
        "\nGRPOConfig, train.py vs bare: " + ("identical" if not differences else f"{len(differences)} field(s) differ")
    )
    for line in differences:
        print(f"  {line}")
    reference = runs["train.py"][0]["rewards"]
    same = all(r["rewards"] == reference for v in VARIANTS for r in runs[v])
    close = all(
        len(r["rewards"]) == len(reference) and all(abs(a - b) < 1e-6 for a, b in zip(r["rewards"], reference))
        for v in VARIANTS
        for r in runs[v]
    )
    if same:
        print(f"check: the same per-step rewards in every run ({len(reference)} steps)")
    elif close:
        print(f"check: per-step rewards agree within 1e-6 in every run ({len(reference)} steps)")
    else:
        ok = False
        print("CHECK FAILED: per-step rewards differ between runs (different completions, not the same work):")
        for v in VARIANTS:
            for i, r in enumerate(runs[v]):
                print(f"  {v} round {i + 1}: " + " ".join(f"{x:.3f}" for x in r["rewards"]))

    # --- figures -----------------------------------------------------------------------------------------
    def best(variant: str, key: str) -> float:
        return min(r[key] for r in runs[variant])

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    print(
        f"\nbest of {args.rounds} round(s) [median of rounds]; per step = median of steps 2..{args.max_steps}; "
        f"load average {os.getloadavg()[0]:.1f} at the end:"
    )
    for v in VARIANTS:
        rss = max(r["peak_rss_mib"] for r in runs[v])
        print(
            f"  {v:>8}: {best(v, 'median_step_s'):.3f} s/step [{median(v, 'median_step_s'):.3f}]  "
            f"trl step_time {best(v, 'median_step_time_s'):.3f} s [{median(v, 'median_step_time_s'):.3f}]  "
            f"wall {best(v, 'wall_s'):.1f} s [{median(v, 'wall_s'):.1f}]  peak RSS {rss:.0f} MiB"
        )
    print(
        f"ratios train.py / bare: wall time {best('train.py', 'wall_s') / best('bare', 'wall_s'):.2f}x, "
        f"trl step_time {best('train.py', 'median_step_time_s') / best('bare', 'median_step_time_s'):.2f}x, "
        f"s/step by median of rounds {median('train.py', 'median_step_s') / median('bare', 'median_step_s'):.2f}x"
    )
    ratio = best("train.py", "median_step_s") / best("bare", "median_step_s")
    print(f"train.py vs bare GRPOTrainer: {ratio:.2f}x seconds per step")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
