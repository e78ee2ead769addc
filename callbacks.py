"""Trainer callbacks: metrics written as they come, and a Ctrl-C that saves before it stops."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

from run_metrics import METRICS_FILE


class MetricsFileCallback(TrainerCallback):
    """Append every trainer log entry to `output_dir/metrics.jsonl`, so a run in progress can be plotted."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {**logs, "step": state.global_step, "epoch": state.epoch}
        with self.path.open("a") as f:
            f.write(json.dumps(entry, default=float) + "\n")


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
