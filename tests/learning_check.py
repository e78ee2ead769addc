"""Does our GRPO wiring learn? A toy task whose reward a random tiny model can climb, through train.py.

    python tests/learning_check.py            # CPU, offline, 1-3 minutes; exit 1 when it does not learn
    python tests/learning_check.py --output_dir outputs/learning-check && python plot.py outputs/learning-check

A check, not a benchmark: tests/test_train.py runs it (30 steps); it is a script of its own so that a user can
run it too and plot the run.

The reward is the share of digits among the characters a completion writes: a random model writes a digit
now and then, so GRPO has a signal from the first step. The run goes through train.main (the same parsing,
data, backend, trainer and callbacks as `python train.py --smoke`) with this file's reward plugged in as
`--reward_funcs tests/learning_check.py:digit_share_reward`. Pass: the mean reward of the last 10 steps is at
least twice that of the first 10.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))


def digit_share_reward(completions, **kwargs) -> list[float]:
    """Share of the completion's non-space characters that are ASCII digits."""
    from rewards import completion_text

    shares = []
    for completion in completions:
        chars = [c for c in completion_text(completion) if not c.isspace()]
        shares.append(sum(c in "0123456789" for c in chars) / len(chars) if chars else 0.0)
    return shares


def main(steps: int = 40, output_dir: str | None = None) -> int:
    """Train the tiny model on the toy reward and compare the first and last 10 steps' mean reward."""
    import train

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(output_dir or Path(tmp) / "run")
        train.main([
            "--smoke", "--output_dir", str(run_dir),
            "--reward_funcs", f"{Path(__file__).resolve()}:digit_share_reward",
            "--max_steps", str(steps), "--save_steps", str(steps),
            "--num_generations", "8", "--per_device_train_batch_size", "16",  # 2 prompts x 8 completions
            "--max_completion_length", "16", "--learning_rate", "5e-3", "--beta", "0", "--temperature", "1.0",
            "--lora_r", "16", "--lora_alpha", "32", "--logging_steps", "1", "--seed", "0",
            "--log_completions", "false", "--eval_holdout", "0",
        ])  # fmt: skip
        logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [entry["reward"] for entry in logs if "reward" in entry]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    print("\nreward per step:", " ".join(f"{r:.3f}" for r in rewards))
    print(f"first 10 steps mean reward: {first:.4f}")
    print(f"last 10 steps mean reward:  {last:.4f}")
    ratio = last / first if first > 0 else float("inf")
    learned = last >= 2 * first and last > 0
    print(f"learning check: {'PASS' if learned else 'FAIL'} (last/first = {ratio:.2f}x, needs >= 2x)")
    return 0 if learned else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="GRPO learning check on a toy reward (CPU, offline).")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (>= 20)")
    parser.add_argument("--output_dir", "--output-dir", help="keep the run here (default: a temporary folder)")
    cli = parser.parse_args()
    raise SystemExit(main(cli.steps, cli.output_dir))
