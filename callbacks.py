"""Trainer callbacks: metrics written as they come, where a step's time goes, and a Ctrl-C that saves first."""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from heldout import describe, heldout_metrics
from run_metrics import METRICS_FILE, heldout_entries, read_jsonl


class MetricsFileCallback(TrainerCallback):
    """Append every trainer log entry to `output_dir/metrics.jsonl`, so a run in progress can be plotted.

    The summary entry the Trainer logs when train() returns (train_runtime, ...) marks the run finished; after
    a Ctrl-C (`interrupt`) it is left out, since the run is not. An evaluation on the held-out problems also
    gets its accuracies under eval/ names (heldout.py), with the temperature they were sampled at.
    """

    def __init__(
        self,
        output_dir: str | Path,
        interrupt: GracefulInterruptCallback | None = None,
        eval_temperature: float | None = None,
    ):
        self.path = Path(output_dir) / METRICS_FILE
        self.interrupt = interrupt
        self.eval_temperature = eval_temperature

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs and self.interrupt is not None and self.interrupt.interrupted:
            return
        entry = {**logs, **heldout_metrics(logs, self.eval_temperature), "step": state.global_step, "epoch": state.epoch}
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=float) + "\n")


class StepTimeCallback(TrainerCallback):
    """Split trl's `step_time` into generating the completions and scoring them; the rest is the optimizer's.

    trl times these blocks too, but reports them to wandb, mlflow or trackio only. This callback times the
    training model's `generate` and the reward functions given to `timed_rewards`, inside optimizer steps only
    (not the held-out evaluations between them), and adds `generation_time` and `reward_time` (seconds per step,
    the mean over the logging period, like trl's `step_time`) to every training log entry. Training's other work,
    the forward and backward passes and the update, is `step_time` less the two. Listed before
    MetricsFileCallback, so that metrics.jsonl gets them. With trl's vLLM rollouts `generate` is not called and
    there is no `generation_time`.
    """

    def __init__(self):
        self.seconds = {"generation_time": 0.0, "reward_time": 0.0}
        self.calls = dict.fromkeys(self.seconds, 0)
        self.steps = 0
        self.in_step = False
        self._replaced = None

    def timed(self, key: str, function):
        """`function`, its time inside optimizer steps added to `key`."""

        @functools.wraps(function)  # trl logs a reward function under its __name__
        def wrapper(*args, **kwargs):
            if not self.in_step:
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1

        return wrapper

    def timed_rewards(self, reward_funcs: list) -> list:
        """The reward functions, timed (reward models, which are not plain functions, are left as they are)."""
        return [self.timed("reward_time", f) if callable(f) and hasattr(f, "__code__") else f for f in reward_funcs]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._replaced = (model, vars(model).get("generate"))  # a wrapper of its own (lora_merge.py), or none
            model.generate = self.timed("generation_time", model.generate)  # trl generates with this very object

    def on_train_end(self, args, state, control, model=None, **kwargs):
        replaced = getattr(self, "_replaced", None)
        if replaced is None:
            return
        model, previous = replaced
        if previous is not None:
            model.generate = previous
        elif "generate" in vars(model):
            del model.generate  # the class's own method again
        self._replaced = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.in_step = True

    def on_step_end(self, args, state, control, **kwargs):
        self.in_step = False
        self.steps += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "step_time" not in logs or not self.steps:
            return  # evaluation entries and the end-of-training summary
        for key, seconds in self.seconds.items():
            if self.calls[key]:
                logs[key] = seconds / self.steps
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)
        self.steps = 0


class HeldOutAccuracyCallback(TrainerCallback):
    """Print the held-out accuracies of each evaluation, and remember the step of the last one.

    `last_step`: the step of the last evaluation already in metrics.jsonl, for a resumed run.
    """

    def __init__(self, size: int, temperature: float, last_step: int | None = None):
        self.size = size
        self.temperature = temperature
        self.last_step = last_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        found = heldout_metrics(logs or {}, self.temperature)
        if not found:
            return
        self.last_step = state.global_step
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            tqdm.write(describe(found, self.size, state.global_step))  # not into the middle of a progress bar


def last_heldout_step(output_dir: str | Path, up_to: int) -> int | None:
    """The step of the last held-out evaluation in output_dir/metrics.jsonl at or before `up_to`; None if none."""
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        return None
    steps = [entry.get("step") for entry in heldout_entries(read_jsonl(path)[0])]
    steps = [step for step in steps if isinstance(step, int) and step <= up_to]
    return steps[-1] if steps else None


class GracefulInterruptCallback(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.interrupted = False
        self._previous_handler = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._previous_handler = signal.signal(signal.SIGINT, self._handle)

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nInterrupted: saving a checkpoint after the current step (Ctrl-C again to quit now).", file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        return control


class CompletionsCallback(TrainerCallback):
    """Each logged step's completions to `output_dir/completions/` (parquet), and now and then a short sample.

    trl's own `log_completions` prints every sampled row with its whole prompt (the system prompt included) at
    every logging step; this prints one question and a few of its completions, cut to a few lines, every
    `every` logging steps (and at the first), and keeps everything else on disk. It reads the completions the
    trainer collects for logging (`GRPOTrainer._logs`, filled at every generation in trl 1.15 and 1.16).
    """

    MAX_LINES = 4
    MAX_WIDTH = 160

    def __init__(self, trainer, output_dir: str | Path, every: int, show: int | None):
        self.trainer = trainer
        self.folder = Path(output_dir) / "completions"
        self.every = every
        self.show = show
        self.last_step = -1

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step
        if not state.is_world_process_zero or not logs or "loss" not in logs or step == self.last_step:
            return  # the end-of-training summary and evaluation entries carry no new completions
        self.last_step = step
        table = self._table(step)
        if not table["completion"]:
            return
        import pandas as pd

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"completions_{step:05d}.parquet"
        pd.DataFrame(table).to_parquet(path)
        logged = step // max(args.logging_steps, 1)
        if self.every > 0 and (logged == 1 or logged % self.every == 0):
            print(self._sample(step, table, path), flush=True)

    def _table(self, step: int) -> dict[str, list]:
        logs = self.trainer._logs
        rewards = {name: list(values) for name, values in logs["rewards"].items()}
        return {
            "step": [step] * len(logs["prompt"]),
            "prompt": list(logs["prompt"]),
            "completion": list(logs["completion"]),
            **rewards,
            "advantage": list(logs["advantages"]),
        }

    def _sample(self, step: int, table: dict[str, list], path: Path) -> str:
        """One question and the first completions of its group, each cut to a few short lines."""
        question = _text(table["prompt"][0], role="user")
        rows = [i for i, prompt in enumerate(table["prompt"]) if prompt == table["prompt"][0]][: self.show or None]
        names = [name for name in table if name not in ("step", "prompt", "completion", "advantage")]
        lines = [f"step {step}: 1 question of {len(set(map(str, table['prompt'])))} ({len(table['completion'])} "
                 f"completions in {path})", f"  question: {_cut(question, self.MAX_WIDTH)}"]  # fmt: skip
        for number, row in enumerate(rows, start=1):
            scores = ", ".join(f"{name} {table[name][row]:.2f}" for name in names)
            lines.append(f"  completion {number} ({scores}; advantage {table['advantage'][row]:+.2f}):")
            text = _text(table["completion"][row], role="assistant").strip().splitlines() or [""]
            lines += [f"    {_cut(line, self.MAX_WIDTH)}" for line in text[: self.MAX_LINES]]
            if len(text) > self.MAX_LINES:
                lines.append(f"    [... {len(text) - self.MAX_LINES} more lines]")
        return "\n".join(lines)


def _text(value, role: str) -> str:
    """The content of the last `role` message of a conversation (or the text itself)."""
    if isinstance(value, str):
        return value
    contents = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == role]
    return str(contents[-1]) if contents else str(value)


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."
