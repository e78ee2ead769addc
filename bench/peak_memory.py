"""What each CPU command needs in memory: peak resident size and time of the README's SmolLM2 commands.

    python bench/peak_memory.py                                     # every command, this folder's code
    python bench/peak_memory.py --code /tmp/before --code .         # before/after, side by side on one machine
    python bench/peak_memory.py --only sft train                    # some of them

Each command runs as a user types it (its own process, the allocator its code chooses) on the real model
(models/SmolLM2-135M-Instruct: python fetch_model.py) and real GSM8K (../shared/data/gsm8k), and the operating
system reports its peak resident size, its children's included (demo.py's stages, vLLM's workers):
  sft       sft.py --config recipes/smollm2-135m-sft.yaml, cut to --sft_samples answers (the peak comes with the
            longest micro-batch: max_length bounds it)
  train     train.py --config recipes/smollm2-135m-grpo.yaml, cut to --grpo_steps steps (the held-out
            evaluation at step 0 included)
  evaluate  evaluate.py --base_model models/SmolLM2-135M-Instruct --limit 500 --max_new_tokens 256 (vLLM reserves its
            KV cache at the start: fewer problems, --evaluate_limit, reach the same peak sooner)
  ask       ask.py --base_model M --checkpoint M --index 12 (M = models/SmolLM2-135M-Instruct: two models)
  demo      demo.py (the whole demo: its largest stage)
The table: peak GB and wall seconds per command and code folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from benchutil import GSM8K, REPO_DIR, cpu_name, run_measured

MODEL_DIR = REPO_DIR / "models" / "SmolLM2-135M-Instruct"


def commands(code: Path, args: argparse.Namespace, out: Path) -> dict[str, list[str]]:
    """The command line of each measured command, run from `code`, writing under `out`."""
    python, data, model = sys.executable, ["--dataset_name", str(args.dataset_name)], str(args.model)
    return {
        "sft": [python, "sft.py", "--config", "recipes/smollm2-135m-sft.yaml", "--model_name_or_path", model, *data,
                "--max_samples", str(args.sft_samples), "--output_dir", str(out / "sft")],
        "train": [python, "train.py", "--config", "recipes/smollm2-135m-grpo.yaml", "--model_name_or_path", model,
                  *data, "--max_steps", str(args.grpo_steps), "--output_dir", str(out / "train"), "--save_merged", "false"],
        "evaluate": [python, "evaluate.py", "--base_model", model, *data, "--limit", str(args.evaluate_limit), "--max_new_tokens", "256",
                     "--output_dir", str(out / "evaluate")],
        "ask": [python, "ask.py", "--base_model", model, "--checkpoint", model, *data, "--index", "12", "--max_new_tokens", "256"],
        "demo": [python, "demo.py", "--output_dir", str(out / "demo")],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/peak_memory.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", help="a folder holding the project's code (repeat; default: this one)")
    parser.add_argument("--only", nargs="+", choices=("sft", "train", "evaluate", "ask", "demo"), help="these commands")
    parser.add_argument("--dataset_name", default=str(GSM8K), help="GSM8K folder (default ../shared/data/gsm8k)")
    parser.add_argument("--model", default=str(MODEL_DIR), help="the model folder (default models/SmolLM2-135M-Instruct)")
    parser.add_argument("--sft_samples", type=int, default=48, help="sft.py's answers (default 48: 6 micro-batches of 8)")
    parser.add_argument("--evaluate_limit", type=int, default=500, help="evaluate.py's problems (default 500)")
    parser.add_argument("--grpo_steps", type=int, default=2, help="train.py's GRPO steps (default 2)")
    parser.add_argument("--output_dir", default="outputs/peak-memory", help="where the runs go (emptied first)")
    args = parser.parse_args()
    codes = [Path(code).resolve() for code in (args.code or [str(REPO_DIR)])]
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"peak_memory.py: error: no model in {args.model}: run python fetch_model.py first")
    out = Path(args.output_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    names = args.only or ["sft", "train", "evaluate", "ask", "demo"]
    print(f"machine: {cpu_name()}", flush=True)
    results: dict[str, dict[str, dict]] = {}
    for number, code in enumerate(codes):
        folder = out / f"code-{number}"
        folder.mkdir(parents=True)
        for name, command in commands(code, args, folder).items():
            if name in names:
                # a cache of its own: evaluate.py would otherwise reuse an earlier run's base completions
                usage = run_measured(command, code, folder / f"{name}.log", env={"GRPO_EVAL_CACHE": str(folder / "eval-cache")})
                results.setdefault(name, {})[str(code)] = usage
                print(f"{name:<9} {usage['peak_gb']:6.2f} GB peak {usage['wall']:7.0f} s  ({code}; allocator: "
                      f"{usage['allocator']})", flush=True)  # fmt: skip
    (out / "peak_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + f"{'command':<9}" + "".join(f"{'peak GB  seconds':>20}" for _ in codes) + "   (" + ", then ".join(map(str, codes)) + ")")
    for name in names:
        cells = [results[name].get(str(code)) for code in codes]
        print(f"{name:<9}" + "".join(f"{c['peak_gb']:>12.2f}{c['wall']:>8.0f}" if c else f"{'':>20}" for c in cells))


if __name__ == "__main__":
    main()
