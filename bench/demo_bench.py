"""Does the recipe raise accuracy, seed after seed? demo.py for several seeds, one table, failures included.

    python bench/demo_bench.py                              # seeds 0 1 2, ~8.5 minutes each on 2 CPU cores
    python bench/demo_bench.py --seeds 0 1 2 3 4 --output_dir outputs/demo-bench
    python bench/demo_bench.py --quick                      # demo.py --quick: the test suite's cut-down run

Each seed is one `python demo.py --seed S` (its own problems, model, SFT and GRPO) in a fresh process.
The table: strict accuracy on the 200 test problems after SFT and after GRPO (greedy, evaluate.py), overall and
on the one-step and the two-step problems apart (the two-step ones on chains of calculations no training
problem has), formatted accuracy, the gain, the held-out strict accuracy train.py measured at its first and
last evaluation (sampled), and the time of SFT, of GRPO and of the whole run.
Then the targets, per seed: the SFT model follows the format (formatted >= 0.8) but is often wrong
(0.1 <= strict <= 0.5), GRPO adds >= 0.25 strict, the held-out curve ends above where it started, the whole
demo takes <= 10 minutes. The machine's load average is printed before and after: on a shared machine the
times are not the demo's alone.
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

TARGETS = "formatted >= 0.8, 0.1 <= SFT strict <= 0.5, gain >= 0.25, held-out last > first, total <= 600 s"


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
    return result


def checks(result: dict) -> list[str]:
    """The targets this run missed (empty: all met)."""
    sft, grpo, curve = result["sft"], result["grpo"], result["heldout_curve"]
    missed = []
    if sft["formatted"] < 0.8:
        missed.append("SFT formatted < 0.8")
    if not 0.1 <= sft["strict"] <= 0.5:
        missed.append("SFT strict outside 0.1-0.5")
    if grpo["strict"] - sft["strict"] < 0.25:
        missed.append("gain < 0.25")
    if len(curve) < 2 or curve[-1][1] <= curve[0][1]:
        missed.append("held-out curve not rising")
    if result["wall"] > 600:
        missed.append("over 10 minutes")
    return missed


def accuracy(model: dict) -> str:
    """strict overall / one-step / two-step, and formatted, of one model."""
    return (f"{model['strict']:.3f} / {model.get('strict_one_step', float('nan')):.3f} / "
            f"{model.get('strict_two_step', float('nan')):.3f}  {model['formatted']:>9.3f}")  # fmt: skip


def table(results: list[dict]) -> str:
    """One row per seed."""
    header = (f"{'seed':>4}  {'SFT strict all/1-step/2-step':>28} {'formatted':>9}  {'GRPO strict all/1-step/2-step':>29}"
              f" {'formatted':>9}  {'gain':>6}  {'held-out first->last':>20}  {'SFT s':>5} {'GRPO s':>6} {'wall s':>6}"
              "  missed")  # fmt: skip
    lines = [header]
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  FAILED after {r['wall']:.0f} s: {r['error']}")
            continue
        curve = r["heldout_curve"]
        held = f"{curve[0][1]:.2f} -> {curve[-1][1]:.2f}" if curve else "-"
        seconds = r["seconds"]
        lines.append(
            f"{r['seed']:>4}  {accuracy(r['sft']):>38}  {accuracy(r['grpo']):>39}"
            f"  {r['grpo']['strict'] - r['sft']['strict']:>+6.3f}  {held:>20}"
            f"  {seconds.get('sft.py', 0):>5.0f} {seconds.get('train.py (GRPO)', 0):>6.0f} {r['wall']:>6.0f}"
            f"  {', '.join(checks(r)) or 'none'}"
        )
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
