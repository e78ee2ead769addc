"""What does held-out accuracy cost? One evaluation against one training step, read from a run's metrics.

    python bench/heldout_cost.py outputs/demo/grpo          # any train.py run with --eval_holdout > 0

train.py logs each optimizer step's wall time (`step_time`) and trl's evaluation loop logs each evaluation's
(`eval_runtime`) to metrics.jsonl. This prints both, their ratio, and the share of the run's time that went to
evaluating: the held-out curve's price. The run's own run_config.json gives the settings it ran with. It also
splits the step (`step_split`): generating the completions and scoring them (train.py's `generation_time` and
`reward_time`), and the rest, the forward and backward passes and the update.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import benchutil  # noqa: F401  (puts the repo's modules on sys.path)
from run_metrics import existing_metrics_file, heldout_entries, read_jsonl, step_entries


def heldout_cost(run_dir: str | Path) -> dict[str, float]:
    """Median step and evaluation seconds of a run, their ratio, and evaluation's share of the run's time."""
    try:
        entries, _ = read_jsonl(existing_metrics_file(run_dir))
    except FileNotFoundError as error:
        raise SystemExit(f"heldout_cost.py: error: {error}") from None
    step_times = [e["step_time"] for e in step_entries(entries) if "step_time" in e]
    eval_times = [e["eval_runtime"] for e in heldout_entries(entries) if "eval_runtime" in e]
    if not step_times or not eval_times:
        raise SystemExit(f"heldout_cost.py: error: {run_dir} has no step_time or no eval_runtime in metrics.jsonl")
    step, evaluation = statistics.median(step_times), statistics.median(eval_times)
    return {
        "steps": len(step_times),
        "evaluations": len(eval_times),
        "step_seconds": step,
        "eval_seconds": evaluation,
        "eval_per_step": evaluation / step,
        "eval_share": sum(eval_times) / (sum(eval_times) + sum(step_times)),
    }


def step_split(entries: list[dict]) -> dict[str, float] | None:
    """Median seconds per step of the whole step, generation, rewards and the rest; None for a run without them."""
    steps = [e for e in step_entries(entries) if {"step_time", "generation_time", "reward_time"} <= e.keys()]
    if not steps:
        return None
    split = {key: statistics.median(e[key] for e in steps) for key in ("step_time", "generation_time", "reward_time")}
    split["rest_time"] = statistics.median(e["step_time"] - e["generation_time"] - e["reward_time"] for e in steps)
    return {**split, "steps": len(steps)}


def describe_split(split: dict[str, float]) -> str:
    """'one training step: S s = generation G s (P %) + rewards R ms + forward, backward and update X s (medians of N)'."""
    return (f"one training step:     {split['step_time']:7.2f} s = generation {split['generation_time']:.2f} s "
            f"({100 * split['generation_time'] / split['step_time']:.0f} %) + rewards {1000 * split['reward_time']:.2f} ms "
            f"+ forward, backward and update {split['rest_time']:.2f} s (medians of {split['steps']})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a train.py output folder")
    args = parser.parse_args()
    cost = heldout_cost(args.run_dir)
    config_file = Path(args.run_dir) / "run_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        settings = {**config.get("script", {}), **config.get("training", {})}
        names = ("eval_holdout", "eval_steps", "per_device_eval_batch_size", "num_generations", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_completion_length")  # fmt: skip
        print("settings: " + ", ".join(f"{name} {settings[name]}" for name in names if name in settings))
    print(f"one training step:     {cost['step_seconds']:7.2f} s (median of {cost['steps']})")
    print(f"one evaluation:        {cost['eval_seconds']:7.2f} s (median of {cost['evaluations']})")
    print(f"evaluation / step:     {cost['eval_per_step']:7.2f}x")
    print(f"share of the run:      {100 * cost['eval_share']:6.1f} % of step + evaluation time went to evaluating")
    split = step_split(read_jsonl(existing_metrics_file(args.run_dir))[0])
    if split:
        print(describe_split(split))


if __name__ == "__main__":
    main()
