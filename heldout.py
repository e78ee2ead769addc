"""Held-out accuracy while training: GSM8K problems kept out of the training set, scored by evaluate.py's scorer.

The reward is what GRPO climbs, not what users want: the blog's reward pays up to 13 points for length and
multiplies by 10 for "wait", so it can rise while the answers get no more right. train.py therefore keeps
`--eval_holdout` training problems aside and, every `eval_steps`, lets trl's own evaluation loop answer them
with the training engine (vLLM when in use). The answers are scored here by `evaluate.score_completion`, the
exact scorer of evaluate.py, through four reward functions of weight 0: they change nothing in training, and
trl logs them for the held-out set as eval_rewards/<name>/mean, which `heldout_metrics` renames to eval/<name>.
trl's evaluation samples at the training temperature (it has no greedy mode), so these figures are sampled
accuracy, a little below what greedy evaluate.py reports; they are labelled with that temperature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evaluate import score_completion
from rewards import completion_text
from run_metrics import ACCURACY_SCORES as SCORES
# trl's key for each figure in an evaluation log -> the key metrics.jsonl and plot.py use.
EVAL_KEYS = {f"eval_rewards/{name}/mean": f"eval/{name}" for name in SCORES} | {
    "eval_completions/mean_length": "eval/mean_tokens",
    "eval_completions/clipped_ratio": "eval/cut_off",
}


def _scorer(metric: str) -> Callable[..., list[float]]:
    def score(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        return [float(score_completion(completion_text(c), gold)[metric]) for c, gold in zip(completions, answer)]

    score.__name__ = metric  # trl logs a reward function under its __name__
    score.__doc__ = f"1.0 when evaluate.py's `{metric}` score holds for the completion (weight 0: logged only)."
    return score


def scorer_rewards() -> list[Callable[..., list[float]]]:
    """evaluate.py's four scores as trl reward functions, to be given weight 0."""
    return [_scorer(metric) for metric in SCORES]


def with_scorers(reward_funcs: list, reward_weights: list[float] | None) -> tuple[list, list[float]]:
    """The training rewards followed by the scorers, and weights that leave the training reward unchanged."""
    weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
    return [*reward_funcs, *scorer_rewards()], [*weights, *[0.0] * len(SCORES)]


def grpo_trainer_class() -> type:
    """trl's GRPOTrainer, except that an evaluation logs its metrics only.

    trl would otherwise save the held-out answers as that step's training completions
    (completions/completions_N.parquet, overwriting the step's own) and print them as a training sample.
    trl is imported here, not at the top: unsloth must be imported before it.
    """
    from trl import GRPOTrainer

    class GRPOTrainerWithHeldOut(GRPOTrainer):
        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self.model.training or not self.log_completions:
                return super().log(logs, start_time)
            self.log_completions = False
            try:
                return super().log(logs, start_time)
            finally:
                self.log_completions = True

    return GRPOTrainerWithHeldOut


def split_holdout(dataset: Any, size: int, seed: int) -> tuple[Any, Any]:
    """(training problems, `size` held-out problems): a seeded draw, disjoint from what is trained on."""
    if size >= len(dataset):
        raise ValueError(f"eval_holdout {size} leaves no problems to train on (the dataset has {len(dataset)})")
    parts = dataset.train_test_split(test_size=size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def heldout_metrics(logs: dict[str, Any], temperature: float | None = None) -> dict[str, Any]:
    """The held-out figures of an evaluation log under their eval/ names ({} for any other log)."""
    found = {new: logs[old] for old, new in EVAL_KEYS.items() if old in logs}
    if found and temperature is not None:
        found["eval/temperature"] = temperature
    return found


def describe(metrics: dict[str, Any], size: int, step: int) -> str:
    """One console line for an evaluation: the held-out accuracies at this step."""
    parts = [f"{name} {metrics[f'eval/{name}']:.3f}" for name in SCORES if f"eval/{name}" in metrics]
    if "eval/mean_tokens" in metrics:
        parts.append(f"mean tokens {metrics['eval/mean_tokens']:.0f}")
    temperature = metrics.get("eval/temperature")
    how = f"sampled at temperature {temperature:g}" if temperature is not None else "sampled"
    return f"held-out accuracy, step {step} ({size} problems, {how}): " + ", ".join(parts)
