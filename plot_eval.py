"""The bar chart of an evaluation: evaluate.py's summary.json, one group of bars per accuracy, one bar per model.

    python plot.py --eval eval_results/summary.json      # eval_results/plots/eval_accuracy.png
    python plot.py outputs/qwen-grpo/eval                # an evaluation output folder

matplotlib is used through `Figure` objects (no pyplot, no GUI backend), as in plot.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_metrics import ACCURACY_SCORES as EVAL_METRICS
from run_metrics import is_number

EVAL_SUMMARY_FILE = "summary.json"
PLOTS_SUBDIR = "plots"


class PlotError(Exception):
    """An input that cannot be plotted; the message is one line naming the file and what is wrong."""


def new_figure(n_panels: int, ncols: int = 2, panel_size: tuple[float, float] = (6.0, 3.6)) -> tuple[Any, list]:
    """A Figure with `n_panels` axes in a grid of `ncols` columns (the unused ones hidden)."""
    from matplotlib.figure import Figure  # no pyplot: no backend selection, no global figure registry

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes[:n_panels]


@dataclass
class ModelScores:
    """One evaluated model: its accuracies (0-1) by metric name, and what else the summary says about it."""

    name: str
    accuracies: dict[str, float]
    n: int | None = None
    mean_tokens: float | None = None
    cut_off: float | None = None


def parse_eval_summary(summary: Any) -> list[ModelScores]:
    """Read evaluate.py's summary.json; every assumption about its layout is here, in one place.

    Expected: {"models": {"base": {"strict": 0.1, "numeric": ..., "flexible": ..., "formatted": ...,
    "mean_tokens": 200.0, "cut_off": 0.1, "n": 1319}, "tuned": {...}}, ...}. Also accepted: the model
    dict at the top level, "models" as a list of dicts with a "name", and a metric given as
    {"accuracy": x}. Models without any of the metrics are left out.
    """
    if not isinstance(summary, dict):
        raise PlotError("the evaluation summary is not a JSON object")
    models = summary.get("models", summary)
    if isinstance(models, list):
        models = {str(m.get("name", f"model {i}")): m for i, m in enumerate(models, 1) if isinstance(m, dict)}
    if not isinstance(models, dict):
        raise PlotError("the evaluation summary's 'models' is neither an object nor a list")

    def number(value: Any) -> float | None:
        if isinstance(value, dict):
            value = value.get("accuracy", value.get("mean"))
        return float(value) if is_number(value) and math.isfinite(value) else None

    scores = []
    for name, fields in models.items():
        if not isinstance(fields, dict):
            continue
        accuracies = {m: v for m in EVAL_METRICS if (v := number(fields.get(m))) is not None}
        if accuracies:
            n = number(fields.get("n"))
            scores.append(
                ModelScores(
                    str(name),
                    accuracies,
                    int(n) if n is not None else None,
                    number(fields.get("mean_tokens")),
                    number(fields.get("cut_off")),
                )
            )
    if not scores:
        raise PlotError(f"the evaluation summary has no model with any of {', '.join(EVAL_METRICS)}")
    return scores


def _model_label(model: ModelScores) -> str:
    details = []
    if model.n is not None:
        details.append(f"n={model.n}")
    if model.mean_tokens is not None:
        details.append(f"{model.mean_tokens:.0f} tokens on average")
    if model.cut_off is not None:
        details.append(f"{100 * model.cut_off:.1f}% cut off")
    return f"{model.name} ({', '.join(details)})" if details else model.name


def plot_eval(summary_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Grouped bars: one group per accuracy metric, one bar per model. Raises PlotError on bad input."""
    summary_path = Path(summary_path)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlotError(f"{summary_path}: evaluation summary not found") from None
    except (OSError, ValueError) as error:
        raise PlotError(f"{summary_path}: not readable JSON ({error})") from None
    try:
        models = parse_eval_summary(summary)
    except PlotError as error:
        raise PlotError(f"{summary_path}: {error}") from None

    metrics = [m for m in EVAL_METRICS if any(m in model.accuracies for model in models)]
    fig, (ax,) = new_figure(1, panel_size=(max(7.0, 1.6 * len(metrics) * len(models)), 4.8))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        xs = [i + (index - (len(models) - 1) / 2) * width for i, m in enumerate(metrics) if m in model.accuracies]
        heights = [model.accuracies[m] for m in metrics if m in model.accuracies]
        bars = ax.bar(xs, heights, width, label=_model_label(model), color=f"C{index}")
        ax.bar_label(bars, fmt="%.3f", fontsize="small", padding=2)
    ax.set_xticks(range(len(metrics)), metrics)
    top = max(v for model in models for v in model.accuracies.values())
    ax.set_ylim(0, max(1.0, top) * 1.1)  # room for the labels; > 1 means the summary was not 0-1 after all
    ax.set_ylabel("accuracy (fraction of problems, 0-1)")
    ax.set_xlabel("answer check")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(f"{summary_path.resolve().parent.name}: evaluation accuracy by model", fontsize="large")
    out = (Path(out_dir) if out_dir else summary_path.parent / PLOTS_SUBDIR) / "eval_accuracy.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
