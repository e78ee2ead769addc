"""Reading a training run's metrics.jsonl, finished or in progress, and JSON Lines files in general: pure Python.

`load_metrics(run_dir)` gives the training-step entries; plot.py draws them, and callbacks.py writes the file;
`trim_metrics` cuts it back to a checkpoint's step when a run resumes (runs.py).
`read_jsonl` and `write_jsonl` are every module's reader and writer of .jsonl files (evaluation records, the
base-result cache, sample problems).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
# Keys only a training step logs. The run's final summary (train_runtime, train_loss, ...) and evaluation
# entries (eval_*) have none of them, which is how they are told apart.
STEP_KEYS = {"loss", "grad_norm", "learning_rate", "reward", "reward_std", "entropy", "kl", "frac_reward_zero_std"}
STEP_KEY_PREFIXES = ("rewards/", "completions/", "clip_ratio/")
# evaluate.py's scores, logged for the held-out problems as eval/<name> (and, weight 0, as rewards on training batches).
ACCURACY_SCORES = ("strict", "numeric", "flexible", "formatted")
HELDOUT_PREFIX = "eval/"


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All JSON objects in a .jsonl file, and how many complete lines could not be read (blank ones aside).

    A run in progress may be caught mid-write: an unterminated last line is skipped without being counted,
    and any other unreadable line is skipped rather than fatal.
    """
    entries, unreadable = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)  # also reads NaN / Infinity, which json.dumps writes for them
            except json.JSONDecodeError:
                unreadable += line.endswith("\n")  # only the line being written lacks its newline
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                unreadable += 1
    return entries, unreadable


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, non-ASCII text kept as is."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def trim_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop the metrics logged after `last_step` from RUN_DIR/metrics.jsonl: a resumed run logs those steps again.

    The kept lines go to a file beside it, renamed over the old one: a crash or a full disk mid-write leaves
    the whole history, never half of it, and other processes never see a file being rewritten. Only one
    process may call it (runs.resume_metrics calls it on the main one).
    """
    path = metrics_path(run_dir)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text("".join(line + "\n" for line in kept))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_step_entry(entry: dict[str, Any]) -> bool:
    """True for a training step's log entry, False for the final summary and evaluation entries."""
    return any(key in STEP_KEYS or key.startswith(STEP_KEY_PREFIXES) for key in entry)


def step_entries(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training-step entries, sorted by step; a step logged again (a resumed run) keeps its last entry."""
    by_step: dict[float, dict[str, Any]] = {}
    for position, entry in enumerate(entries, start=1):
        if not is_step_entry(entry):
            continue
        step = entry.get("step")
        # TRL always logs `step`; the position only stands in for logs written some other way.
        by_step[step if is_number(step) else position] = entry
    return [by_step[step] for step in sorted(by_step)]


def heldout_entries(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The held-out evaluations (entries with eval/ keys), sorted by step; a step evaluated again keeps its last."""
    by_step = {entry.get("step"): entry for entry in entries if any(k.startswith(HELDOUT_PREFIX) for k in entry)}
    return [by_step[step] for step in sorted(by_step, key=lambda s: s if is_number(s) else -1)]


def metrics_path(run_dir: str | Path) -> Path:
    """RUN_DIR/metrics.jsonl; a path to a .jsonl file itself is taken as is."""
    path = Path(run_dir)
    return path if path.suffix == ".jsonl" else path / METRICS_FILE


def existing_metrics_file(run_dir: str | Path) -> Path:
    """RUN_DIR/metrics.jsonl, checked: FileNotFoundError names the missing directory or file."""
    path = metrics_path(run_dir)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: run directory not found")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (train.py writes it as the run logs)")
    return path


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The training-step log entries of a run, sorted by step ([] when none is logged yet).

    Raises FileNotFoundError when the run directory or its metrics.jsonl does not exist.
    """
    return step_entries(read_jsonl(existing_metrics_file(run_dir))[0])


def is_number(value: Any) -> bool:
    """True for an int or a float (JSON's numbers), False for a bool, a string, None."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def series(entries: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric over the entries that logged it as a number."""
    steps, values = [], []
    for position, entry in enumerate(entries, start=1):
        value = entry.get(key)
        if is_number(value):
            step = entry.get("step")
            steps.append(float(step) if is_number(step) else float(position))
            values.append(float(value))
    return steps, values


def reward_components(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The reward function names logged as rewards/<name>/mean, in first-seen order (the trainer's order)."""
    names: dict[str, None] = {}
    for entry in entries:
        for key in entry:
            if key.startswith("rewards/") and key.endswith("/mean"):
                names[key[len("rewards/") : -len("/mean")]] = None
    return list(names)


def auto_smoothing(n_points: int) -> float:
    """An EMA weight averaging over about 1/20 of the logged points (1 / (1 - w) of them), within 2..20.

    A heavier weight would make the curve lag the run's trend by w / (1 - w) steps.
    """
    return min(0.95, max(0.5, 1.0 - 20.0 / max(n_points, 1)))


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average; NaN points stay NaN and do not reset it."""
    smoothed, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            smoothed.append(math.nan)
            continue
        count += 1
        last = weight * last + (1.0 - weight) * value
        # Dividing by 1 - w^k removes the pull towards the zero the average starts from.
        smoothed.append(last / (1.0 - weight**count) if weight > 0 else value)
    return smoothed
