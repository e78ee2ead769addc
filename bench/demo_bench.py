"""Does the recipe raise accuracy, seed after seed? demo.py for several seeds, one table, failures included.

    python bench/demo_bench.py                              # seeds 0 1 2, ~12-15 minutes each on 2 CPU cores
    python bench/demo_bench.py --seeds 0 1 2 3 4 --output_dir outputs/demo-bench
    python bench/demo_bench.py --quick                      # demo.py --quick: the test suite's cut-down run

Each seed is one `python demo.py --seed S` (its own problems, SFT and GRPO of SmolLM2-135M-Instruct) in a fresh
process. The table: strict accuracy on the 200 test problems as fetched, after SFT and after GRPO (greedy,
evaluate.py), overall and on the one-step and the two-step problems apart (the two-step ones on chains of
calculations no training problem has), formatted accuracy, the gain, the held-out strict accuracy train.py
measured at its first and last evaluation (sampled), and the time of SFT, of GRPO and of the run after the fetch.
Each seed's two models also answer samples/handwritten/test.jsonl: 40 problems written by hand in wordings the
generator does not use (16 one-step, 24 two-step), to see whether the gain carries beyond the generator's words.
Then the targets, per seed: after GRPO strict >= 0.75 and >= 0.25 above after SFT, formatted >= 0.95, the demo
<= 15 minutes after the model's fetch. The machine's load average is printed before and after: on a shared
machine the times are not the demo's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchutil import REPO_DIR, go_offline

sys.path.insert(0, str(REPO_DIR))
from demo import EVAL_MAX_NEW_TOKENS, strict_by_steps  # noqa: E402

HANDWRITTEN = REPO_DIR / "samples" / "handwritten"

TARGETS = "GRPO strict >= 0.75, gain >= 0.25, GRPO formatted >= 0.95, <= 900 s after the fetch"
FETCH = "fetch_model.py"


def run_seed(seed: int, output_dir: Path, quick: bool) -> dict:
    """One demo run; its demo_result.json, or {"seed", "error"} when it failed."""
    run_dir = output_dir / f"seed-{seed}"
    command = [sys.executable, str(REPO_DIR / "demo.py"), "--seed", str(seed), "--output_dir", str(run_dir), "--overwrite"]
    command += ["--quick"] if quick else []
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (output_dir / f"seed-{seed}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"seed": seed, "error": f"exit {done.returncode}: {last}", "wall": wall}
    result = json.loads((run_dir / "demo_result.json").read_text())
    result["wall"] = wall
    result["handwritten"] = handwritten(run_dir)
    return result


def handwritten(run_dir: Path) -> dict:
    """After SFT and after GRPO on the hand-written problems: strict overall, one-step and two-step."""
    eval_dir = run_dir / "eval-handwritten"
    command = [sys.executable, str(REPO_DIR / "evaluate.py"), "--checkpoint", str(run_dir / "grpo" / "merged"),
               "--dataset_name", str(HANDWRITTEN), "--split", "test", "--max_new_tokens", str(EVAL_MAX_NEW_TOKENS),
               "--backend", "hf", "--output_dir", str(eval_dir)]  # fmt: skip
    subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, check=True)
    models = json.loads((eval_dir / "summary.json").read_text())["models"]
    for label, figures in strict_by_steps(eval_dir, HANDWRITTEN).items():
        models[label].update(figures)
    return {"sft": models["base"], "grpo": models["tuned"]}


def checks(result: dict) -> list[str]:
    """The targets this run missed (empty: all met)."""
    sft, grpo = result["sft"], result["grpo"]
    missed = []
    if grpo["strict"] < 0.75:
        missed.append("GRPO strict < 0.75")
    if grpo["strict"] - sft["strict"] < 0.25:
        missed.append("gain < 0.25")
    if grpo["formatted"] < 0.95:
        missed.append("GRPO formatted < 0.95")
    if after_fetch(result) > 900:
        missed.append("over 15 minutes")
    return missed


def after_fetch(result: dict) -> float:
    """Seconds of the demo's stages after the model's fetch."""
    return sum(seconds for stage, seconds in result["seconds"].items() if stage != FETCH)


def accuracy(model: dict) -> str:
    """strict overall / one-step / two-step, and formatted, of one model."""
    return (f"{model['strict']:.3f} / {model.get('strict_one_step', float('nan')):.3f} / "
            f"{model.get('strict_two_step', float('nan')):.3f}  {model['formatted']:>9.3f}")  # fmt: skip


def table(results: list[dict]) -> str:
    """One row per seed."""
    header = (f"{'seed':>4}  {'fetched strict':>14}  {'SFT strict all/1-step/2-step':>28} {'formatted':>9}  "
              f"{'GRPO strict all/1-step/2-step':>29} {'formatted':>9}  {'gain':>6}  {'held-out first->last':>20}  "
              f"{'SFT s':>5} {'GRPO s':>6} {'total s':>7}  missed")  # fmt: skip
    lines = [header]
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  FAILED after {r['wall']:.0f} s: {r['error']}")
            continue
        curve = r["heldout_curve"]
        held = f"{curve[0][1]:.2f} -> {curve[-1][1]:.2f}" if curve else "-"
        seconds = r["seconds"]
        lines.append(
            f"{r['seed']:>4}  {r['fetched']['strict']:>14.3f}  {accuracy(r['sft']):>38}  {accuracy(r['grpo']):>39}"
            f"  {r['grpo']['strict'] - r['sft']['strict']:>+6.3f}  {held:>20}"
            f"  {seconds.get('sft.py', 0):>5.0f} {seconds.get('train.py (GRPO)', 0):>6.0f} {after_fetch(r):>7.0f}"
            f"  {', '.join(checks(r)) or 'none'}"
        )
        if r.get("handwritten"):
            sft, grpo = r["handwritten"]["sft"], r["handwritten"]["grpo"]
            lines.append(f"{'':>4}  hand-written ({sft['n']}): SFT {accuracy(sft)}  GRPO {accuracy(grpo)}  "
                         f"gain {grpo['strict'] - sft['strict']:+.3f}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output_dir", "--output-dir", default="outputs/demo-bench")
    parser.add_argument("--quick", action="store_true", help="demo.py --quick")
    args = parser.parse_args()
    go_offline()
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    import trl

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")  # fmt: skip
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, output_dir, args.quick))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\ntargets: {TARGETS}\n")
    print(table(results))
    (output_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    ok = [r for r in results if "error" not in r and not checks(r)]
    print(f"\n{len(ok)} of {len(results)} seeds met every target; runs in {output_dir}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
