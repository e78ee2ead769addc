"""Draw a training run's curves, and a base-vs-tuned accuracy bar chart (plot_eval.py), as PNG files.

    # Curves of a run (finished or still training): RUN_DIR/plots/*.png
    python plot.py outputs/qwen-grpo

    # Somewhere else, with a fixed EMA weight (0 = raw curves only)
    python plot.py outputs/qwen-grpo --output-dir figures --smoothing 0.9

    # Bar chart of an evaluation summary (evaluate.py's summary.json): eval_results/plots/eval_accuracy.png
    python plot.py --eval eval_results/summary.json

A run directory that also holds a summary.json gets the bar chart too, and a directory with only a
summary.json (an evaluation output) gets only the bar chart. The paths of the written files are printed,
one per line. A missing or empty metrics.jsonl, or one without a single training step, is an error
(exit code 2).

Input: RUN_DIR/metrics.jsonl, one TRL log entry (`trainer.state.log_history` item) per line, appended
while the run trains. A half-written last line is skipped, a step logged twice (a resumed run) keeps its
last entry, and the final summary entry (train_runtime, train_loss, ...) only marks the run finished.
run_metrics.py reads it: `load_metrics(run_dir)` (there, or as plot.load_metrics) is for other scripts.

matplotlib is used through `Figure` objects (no pyplot, no GUI backend), so this runs on a server and in
tests, and importing `load_metrics` does not import matplotlib.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plot_eval import EVAL_SUMMARY_FILE, PLOTS_SUBDIR, PlotError, new_figure, plot_eval
from run_metrics import (
    ACCURACY_SCORES,
    auto_smoothing,
    ema,
    existing_metrics_file,
    heldout_entries,
    load_metrics,
    metrics_path,
    read_jsonl,
    reward_components,
    series,
    step_entries,
)

# Keys of the run's final summary entry, logged once training ends: the run is finished.
FINISHED_KEYS = ("train_runtime", "train_loss")

# ---------------------------------------------------------------------------------------------------------
# Drawing


@dataclass
class Style:
    """What every figure of one run shares: its name for titles, and the EMA weight."""

    run_name: str
    smoothing: float | None  # None: auto_smoothing per series
    status: str = ""


def draw_curve(
    ax: Any,
    steps: list[float],
    values: list[float],
    label: str,
    color: str,
    style: Style,
    std: list[float] | None = None,
    **line: Any,
) -> None:
    """The raw series faint, its EMA on top, and a shaded ±std band around the EMA when `std` is given.

    `line`: matplotlib line properties of the EMA line (linestyle, linewidth, marker, ...).
    """
    weight = auto_smoothing(len(values)) if style.smoothing is None else style.smoothing
    smooth = ema(values, weight)
    if weight > 0:
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        label = f"{label} (EMA {weight:.2f})"
    ax.plot(steps, smooth, color=color, label=label, **{"linewidth": 1.8, **line})
    if std is not None:
        # The band is the spread of rewards across the step's completions, smoothed like the mean.
        spread = ema(std, weight)
        ax.fill_between(
            steps,
            [m - s for m, s in zip(smooth, spread)],
            [m + s for m, s in zip(smooth, spread)],
            color=color,
            alpha=0.15,
            linewidth=0,
            label="±1 std over completions",
        )


def finish_panel(ax: Any, title: str, ylabel: str, legend: bool = True) -> None:
    """Title, axis labels (whole training steps on x), grid and, when anything is labelled, the legend."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("training step (optimizer updates)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "step 2.5" on short runs
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def _save(fig: Any, style: Style, what: str, path: Path) -> Path:
    fig.suptitle(f"{style.run_name}: {what}{style.status}", fontsize="large")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _mean_std(entries: Sequence[dict[str, Any]], mean_key: str, std_key: str) -> tuple[list, list, list | None]:
    """Steps and means of a metric, with its std aligned to them (None unless every step logged one)."""
    steps, means = series(entries, mean_key)
    stds = {s: v for s, v in zip(*series(entries, std_key))}
    aligned = [stds.get(s) for s in steps]
    return steps, means, (aligned if steps and None not in aligned else None)


def plot_rewards(entries: Sequence[dict[str, Any]], out_dir: Path, style: Style) -> Path | None:
    """Total reward and each reward function's reward over steps, mean ± std, one panel each."""
    panels = [("total reward (weighted sum)", "reward", "reward_std")]
    panels += [
        (name, f"rewards/{name}/mean", f"rewards/{name}/std")
        for name in reward_components(entries)
        if name not in ACCURACY_SCORES  # weight-0 scores: drawn with the held-out accuracy
    ]
    panels = [p for p in panels if series(entries, p[1])[0]]
    if not panels:
        return None
    fig, axes = new_figure(len(panels))
    for index, (ax, (title, mean_key, std_key)) in enumerate(zip(axes, panels)):
        steps, means, stds = _mean_std(entries, mean_key, std_key)
        draw_curve(ax, steps, means, "mean over completions", f"C{index}", style, std=stds)
        finish_panel(ax, title, "reward (points per completion)")
    return _save(fig, style, "rewards", out_dir / "rewards.png")


# Each length series drawn over the previous ones, thinner and broken (dashes, dots), so that lines of equal
# values (all completions cut at the limit: max = mean = min) still show every colour.
LENGTH_LINES = (
    ("max", "completions/max_length", "C3", {"linewidth": 3.2}),
    ("mean", "completions/mean_length", "C0", {"linewidth": 2.4, "linestyle": (0, (6, 4))}),
    ("min", "completions/min_length", "C2", {"linewidth": 2.0, "linestyle": (3, (2, 5))}),
    ("mean of terminated", "completions/mean_terminated_length", "C1",
     {"linewidth": 1.4, "linestyle": (0, (8, 3, 1, 3)), "marker": "o", "markersize": 3}),
)  # fmt: skip


def terminated_lengths(entries: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The mean length of completions that ended on their own, NaN at steps where none did.

    trl logs 0 there (every completion was cut at max_completion_length): not a length, an undefined mean.
    """
    steps, values = series(entries, "completions/mean_terminated_length")
    clipped = dict(zip(*series(entries, "completions/clipped_ratio")))
    return steps, [math.nan if value == 0 or clipped.get(step, 0) >= 1 else value for step, value in zip(steps, values)]


def completion_length_figure(entries: Sequence[dict[str, Any]], style: Style) -> Any | None:
    """The completion-length figure (see plot_completion_lengths); None when nothing of it was logged."""
    lines = []
    for label, key, color, line in LENGTH_LINES:
        steps, values = terminated_lengths(entries) if key.endswith("terminated_length") else series(entries, key)
        if any(math.isfinite(value) for value in values):
            lines.append((label, steps, values, color, line))
    clipped = series(entries, "completions/clipped_ratio")
    if not lines and not clipped[0]:
        return None
    fig, (ax,) = new_figure(1, panel_size=(9.0, 4.8))
    for label, steps, values, color, line in lines:
        draw_curve(ax, steps, values, label, color, style, **line)
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if clipped[0]:
        # A second axis: a fraction next to token counts would be flattened on one scale.
        right = ax.twinx()
        # Thin and dotted: at 100 % it can sit right on the length lines.
        draw_curve(right, clipped[0], [100 * v for v in clipped[1]], "clipped at max_completion_length", "C7", style,
                   linewidth=1.2, linestyle=":")  # fmt: skip
        right.set_ylabel("completions clipped (%)")
        right.set_ylim(0, 105)
        handles += right.get_legend_handles_labels()[0]
        labels += right.get_legend_handles_labels()[1]
    finish_panel(ax, "", "completion length (tokens)", legend=False)
    # Below the axes: inside, it would cover the max-length line that sits at the top.
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize="small")
    return fig


def plot_completion_lengths(entries: Sequence[dict[str, Any]], out_dir: Path, style: Style) -> Path | None:
    """Max / mean / min completion length in tokens, the mean of those that ended on their own (where any did),
    and the share cut off at max_completion_length."""
    fig = completion_length_figure(entries, style)
    return None if fig is None else _save(fig, style, "completion length", out_dir / "completion_length.png")


def _plot_panels(
    entries: Sequence[dict[str, Any]],
    panels: list[tuple[str, str, str]],
    out_dir: Path,
    style: Style,
    what: str,
    filename: str,
    smooth: bool = True,
) -> Path | None:
    """One panel per logged metric in `panels` ((title, key, y label)); None when none is logged."""
    panels = [p for p in panels if series(entries, p[1])[0]]
    if not panels:
        return None
    fig, axes = new_figure(len(panels))
    for index, (ax, (title, key, ylabel)) in enumerate(zip(axes, panels)):
        if smooth:
            draw_curve(ax, *series(entries, key), key, f"C{index}", style)
        else:
            ax.plot(*series(entries, key), color=f"C{index}", linewidth=1.8)
        # One panel: the figure's title already says what it is.
        finish_panel(ax, title if len(panels) > 1 else "", ylabel)
    return _save(fig, style, what, out_dir / filename)


def plot_loss(entries: Sequence[dict[str, Any]], out_dir: Path, style: Style) -> Path | None:
    """The training loss, and the gradient norm next to it when logged."""
    panels = [("loss", "loss", "GRPO loss (unitless)"), ("gradient norm", "grad_norm", "L2 norm before clipping")]
    return _plot_panels(entries, panels, out_dir, style, "loss", "loss.png")


def plot_kl_entropy(entries: Sequence[dict[str, Any]], out_dir: Path, style: Style) -> Path | None:
    """KL to the reference model (logged only when beta > 0) and the policy's token entropy, where logged."""
    panels = [
        ("KL divergence to the reference model", "kl", "KL (nats per token)"),
        ("policy entropy", "entropy", "entropy (nats per token)"),
    ]
    return _plot_panels(entries, panels, out_dir, style, "KL and entropy", "kl_entropy.png")


def plot_learning_rate(entries: Sequence[dict[str, Any]], out_dir: Path, style: Style) -> Path | None:
    """The learning-rate schedule (not smoothed: it is exact, not noisy)."""
    panels = [("learning rate", "learning_rate", "learning rate (per step)")]
    return _plot_panels(entries, panels, out_dir, style, "learning rate", "learning_rate.png", smooth=False)


def plot_heldout_accuracy(
    entries: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]], out_dir: Path, style: Style
) -> Path | None:
    """Held-out accuracy at each evaluation next to the training reward: a reward that climbs while strict
    accuracy stays flat is being gamed."""
    drawn = [name for name in ACCURACY_SCORES if series(evaluations, f"eval/{name}")[0]]
    if not drawn:
        return None
    fig, (ax,) = new_figure(1, panel_size=(9.0, 4.8))
    for index, name in enumerate(drawn):
        steps, values = series(evaluations, f"eval/{name}")
        # Offset markers: equal accuracies would otherwise hide each other.
        ax.plot(steps, values, marker="os^D"[index], markersize=7 - index, linewidth=1.8, color=f"C{index}",
                linestyle=("-", "--", "-.", ":")[index], label=f"held-out {name}")  # fmt: skip
    temperature = next((e["eval/temperature"] for e in evaluations if "eval/temperature" in e), None)
    how = f", sampled at temperature {temperature:g}" if temperature is not None else ""
    ax.set_ylim(-0.03, 1.03)
    handles, labels = ax.get_legend_handles_labels()
    reward = series(entries, "reward")
    if reward[0]:
        right = ax.twinx()
        draw_curve(right, *reward, "training reward (right axis)", "C7", style)
        right.set_ylabel("reward (points per completion)")
        handles += right.get_legend_handles_labels()[0]
        labels += right.get_legend_handles_labels()[1]
    finish_panel(ax, f"held-out problems{how}", "accuracy (share of problems)", legend=False)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize="small")
    return _save(fig, style, "held-out accuracy", out_dir / "heldout_accuracy.png")


PLOTTERS = (plot_rewards, plot_completion_lengths, plot_loss, plot_kl_entropy, plot_learning_rate)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, smoothing: float | None = None) -> list[Path]:
    """Draw every figure the run's metrics allow; returns the written paths. Raises PlotError on bad input."""
    run_dir = Path(run_dir)
    try:
        path = existing_metrics_file(run_dir)
    except FileNotFoundError as error:
        raise PlotError(str(error)) from None
    entries, unreadable = read_jsonl(path)
    steps = step_entries(entries)
    if not entries:
        raise PlotError(f"{path}: empty, nothing logged yet")
    if not steps:
        raise PlotError(f"{path}: no training-step entries (only {len(entries)} summary/eval entries)")
    if unreadable:
        print(f"note: skipped {unreadable} unreadable line(s) in {path}", file=sys.stderr)
    finished = any(key in entry for entry in entries for key in FINISHED_KEYS)
    last_step = steps[-1].get("step", len(steps))
    status = f" ({'finished' if finished else 'in progress'}, step {last_step})"
    name = (run_dir.parent if run_dir.suffix == ".jsonl" else run_dir).resolve().name
    style = Style(run_name=name, smoothing=smoothing, status=status)
    out_dir = Path(out_dir) if out_dir else path.parent / PLOTS_SUBDIR
    written = [p for plotter in PLOTTERS if (p := plotter(steps, out_dir, style)) is not None]
    accuracy = plot_heldout_accuracy(steps, heldout_entries(entries), out_dir, style)
    return written + ([accuracy] if accuracy else [])


# ---------------------------------------------------------------------------------------------------------
# Command line


@dataclass
class PlotArguments:
    """Options of plot.py (the run directory is the positional argument)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where to write the PNGs (default: RUN_DIR/plots).", "metavar": "DIR"}
    )
    eval: str | None = field(
        default=None,
        metadata={
            "help": "An evaluation summary.json to draw as a bar chart (default: RUN_DIR/summary.json if any).",
            "metavar": "SUMMARY_JSON",
        },
    )
    smoothing: float | None = field(
        default=None,
        metadata={
            "help": "EMA weight in [0, 1): 0 = raw curves only, 0.9 = about 10 points averaged "
            "(default: picked from the number of logged steps).",
            "metavar": "W",
        },
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[str | None, PlotArguments]:
    """The run directory (or None) and the options; argparse exits with code 2 on a bad command line."""
    from transformers import (
        HfArgumentParser,  # here, so `import plot` for load_metrics stays light
    )

    # The module docstring's commands as the help text; the fields' help already says what their defaults mean.
    parser = HfArgumentParser(
        PlotArguments, description=__doc__.split("\nInput:")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dir",
        nargs="?",
        default=None,
        metavar="RUN_DIR",
        help="A training run's output directory (with metrics.jsonl).",
    )
    args, extra = parser.parse_args_into_dataclasses(args=argv)
    if extra.run_dir is None and args.eval is None:
        parser.error("give a RUN_DIR, --eval SUMMARY_JSON, or both")
    if args.smoothing is not None and not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing must be in [0, 1), got {args.smoothing}")
    return extra.run_dir, args


def main(argv: Sequence[str] | None = None) -> int:
    """Draw what was asked, print the written paths; returns 0, or 2 with one line on stderr."""
    run_dir, args = parse_args(argv)
    written: list[Path] = []
    try:
        eval_summary = args.eval
        if run_dir is not None:
            run_path = Path(run_dir)
            has_summary = (run_path / EVAL_SUMMARY_FILE).is_file()
            # An evaluation output directory holds a summary.json and no metrics: just the bar chart then.
            if metrics_path(run_path).is_file() or not has_summary:
                written += plot_run(run_path, args.output_dir, args.smoothing)
            if eval_summary is None and has_summary:
                eval_summary = run_path / EVAL_SUMMARY_FILE
        if eval_summary is not None:
            written.append(plot_eval(eval_summary, args.output_dir))
        status = 0
    except PlotError as error:
        print(f"plot.py: error: {error}", file=sys.stderr)
        status = 2
    for path in written:  # also on an error: a run's curves are worth having when its eval summary is bad
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
