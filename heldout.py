"""Held-out accuracy while training: GSM8K problems kept out of the training set, scored by evaluate.py's scorer.

The reward is what GRPO climbs, not what users want: the blog's reward pays up to 13 points for length and
multiplies by 10 for "wait", so it can rise while the answers get no more right. train.py therefore keeps
`--eval_holdout` training problems aside (`heldout_questions`: the same ones sft.py keeps out of the cold
start, so neither stage trains on them) and, every `eval_steps`, lets trl's own evaluation loop answer them
with the training engine (vLLM when in use). The answers are scored here by `scoring.score_completion`, the
exact scorer of evaluate.py, through four reward functions of weight 0: they change nothing in training, and
trl logs them for the held-out set as eval_rewards/<name>/mean, which `heldout_metrics` renames to eval/<name>.
trl's evaluation samples at the training temperature (it has no greedy mode), so these figures are sampled
accuracy, a little below what greedy evaluate.py reports; they are labelled with that temperature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from scoring import score_completion
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


def heldout_questions(questions: Iterable[Any], size: int) -> set[str]:
    """The questions of the `size` held-out problems: the distinct questions whose SHA-256 digests are lowest.

    A choice made by the questions alone, with no seed, order, filter or batch size in it: sft.py and train.py,
    reading the same training split, keep the same problems out of training, and the `size` held-out problems
    are among any larger number's (train.py's 50 are among sft.py's 100).
    """
    distinct = {q for q in questions if isinstance(q, str) and q.strip()}
    return set(sorted(distinct, key=lambda q: hashlib.sha256(q.encode()).hexdigest())[:size])


def split_holdout(dataset: Any, held: set[str]) -> tuple[Any, Any]:
    """(the problems whose question is not in `held`, one problem per question in `held`), in dataset order."""
    first = {}
    for index, question in enumerate(dataset["question"]):
        if question in held:
            first.setdefault(question, index)
    train_part = dataset.filter(lambda row: row["question"] not in held, desc="Holding out")
    if len(train_part) == 0:
        raise ValueError(f"eval_holdout {len(held)} leaves no problems to train on (the dataset has {len(dataset)})")
    return train_part, dataset.select(sorted(first.values()))


def hold_out(
    dataset: Any, requested: int, training_args: Any, limit: int | None = None, split_questions: list[str] | None = None
) -> tuple[Any, Any, str]:
    """(training problems, held-out problems, a note for the console); ValueError when it cannot be done.

    The held-out problems are `heldout_questions(split_questions, requested)`: chosen among every question of
    the split as stored (default: `dataset`'s), so that a problem dropped from `dataset` (a prompt too long)
    leaves the choice as sft.py makes it. All of them stay out of training; the evaluation keeps a whole number
    of evaluation batches of those in `dataset`: trl averages its evaluation metrics batch by batch, so a
    smaller last batch would weigh its problems more than the others. `limit` (--max_samples) then caps the
    training problems only.
    """
    batch = training_args.per_device_eval_batch_size * max(training_args.world_size, 1)
    if requested < batch:
        raise ValueError(
            f"eval_holdout {requested} is smaller than one evaluation batch ({batch}: per_device_eval_batch_size x "
            "processes); raise --eval_holdout or lower --per_device_eval_batch_size"
        )
    held = heldout_questions(dataset["question"] if split_questions is None else split_questions, requested)
    try:
        train_part, heldout = split_holdout(dataset, held)
    except ValueError as error:
        raise ValueError(f"{error}; lower --eval_holdout (0 = off)") from None
    size = len(heldout) - len(heldout) % batch
    if size == 0:
        raise ValueError(f"eval_holdout {requested}: only {len(heldout)} of the held-out problems can be used, "
                         f"less than one evaluation batch ({batch})")  # fmt: skip
    heldout = heldout.select(range(size))
    if limit is not None and limit < len(train_part):
        train_part = train_part.select(range(limit))
    rounded = f" (eval_holdout {requested} rounded down to whole batches of {batch})" if size != requested else ""
    every = f"every {training_args.eval_steps} steps" if training_args.eval_steps else "during training"
    note = (
        f"held-out: {size} training problems set aside{rounded}, scored {every} at temperature "
        f"{training_args.temperature:g} (metrics eval/strict, ...)"
    )
    return train_part, heldout, note


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


def evaluation_without_loss(trainer: Any) -> None:
    """Make trl's held-out evaluation generate and score its answers, and skip the loss.

    trl's GRPO evaluation generates an evaluation batch and then runs the policy over all of it once more for a
    loss, which is no figure of merit here: it is the GRPO loss of the policy's own samples, ~0 by construction
    with one pass per generation. On the CPU that pass took ~13 s of each ~31 s evaluation of 32 SmolLM2 answers,
    and on a whole evaluation batch at once it set the run's peak memory (25 answers: ~2 GB above a training
    step). The held-out scores come from the generation and the rewards alone; trl logs no eval_loss then.
    """

    def prediction_step(model, inputs, prediction_loss_only, ignore_keys=None):
        trainer._prepare_inputs(inputs)  # generation and rewards: the held-out scores
        return None, None, None

    trainer.prediction_step = prediction_step
