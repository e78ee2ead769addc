"""Trainer callbacks: metrics written as they come, and a Ctrl-C that saves before it stops."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

from heldout import describe, heldout_metrics
from run_metrics import METRICS_FILE


class MetricsFileCallback(TrainerCallback):
    """Append every trainer log entry to `output_dir/metrics.jsonl`, so a run in progress can be plotted.

    An evaluation on the held-out problems also gets its accuracies under eval/ names (heldout.py), with the
    temperature they were sampled at.
    """

    def __init__(self, output_dir: str | Path, eval_temperature: float | None = None):
        self.path = Path(output_dir) / METRICS_FILE
        self.eval_temperature = eval_temperature

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {**logs, **heldout_metrics(logs, self.eval_temperature), "step": state.global_step, "epoch": state.epoch}
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=float) + "\n")


class HeldOutAccuracyCallback(TrainerCallback):
    """Print the held-out accuracies of each evaluation, and remember the step of the last one."""

    def __init__(self, size: int, temperature: float):
        self.size = size
        self.temperature = temperature
        self.last_step: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        found = heldout_metrics(logs or {}, self.temperature)
        if not found:
            return
        self.last_step = state.global_step
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            tqdm.write(describe(found, self.size, state.global_step))  # not into the middle of a progress bar


def trim_metrics(output_dir: str | Path, last_step: int) -> None:
    """Drop metrics logged after `last_step`: a resumed run logs those steps again."""
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    path.write_text("".join(line + "\n" for line in kept))


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
