"""plot.py on a synthetic TRL log: PNGs written, partial lines and the summary entry handled, clear errors."""

import json
import math
import random
import subprocess
import sys

import pytest
from conftest import REPO

import plot
import plot_eval
import run_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REWARD_FUNCS = ("custom_reward_func", "integer_reward")


def step_entry(step: int, steps: int, rng: random.Random, kl: bool) -> dict:
    """One GRPO log entry with the keys trl 1.16 logs, values drifting the way a healthy run's do."""
    progress = step / steps
    entry = {
        "loss": rng.gauss(0.01, 0.02),
        "grad_norm": abs(rng.gauss(0.5, 0.2)),
        "learning_rate": 5e-6 * (1 - progress),
        "num_tokens": 4096.0 * step,
        "completions/mean_length": 180 + 120 * progress + rng.gauss(0, 15),
        "completions/min_length": 40 + rng.gauss(0, 5),
        "completions/max_length": 512.0,
        "completions/clipped_ratio": max(0.0, 0.3 - 0.25 * progress + rng.gauss(0, 0.05)),
        "completions/mean_terminated_length": 160 + 100 * progress,
        "completions/min_terminated_length": 40.0,
        "completions/max_terminated_length": 500.0,
        "rewards/custom_reward_func/mean": 2 + 20 * progress + rng.gauss(0, 2),
        "rewards/custom_reward_func/std": 5 + rng.random(),
        "rewards/integer_reward/mean": 0.1 + 0.35 * progress,
        "rewards/integer_reward/std": 0.2,
        "reward": 2.1 + 20.35 * progress + rng.gauss(0, 2),
        "reward_std": 5.5 + rng.random(),
        "frac_reward_zero_std": 0.1,
        "entropy": 0.9 - 0.3 * progress,
        "clip_ratio/low_mean": 0.0,
        "clip_ratio/region_mean": 0.0,
        "step_time": 12.0 + rng.random(),
        "epoch": round(progress, 4),
        "step": step,
    }
    if kl:
        entry["kl"] = 0.001 * step
    return entry


def write_run(run_dir, steps: int = 20, kl: bool = True, finished: bool = True, partial_last: bool = True):
    rng = random.Random(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(step_entry(step, steps, rng, kl)) for step in range(1, steps + 1)]
    if finished:
        summary = {
            "train_runtime": 250.0,
            "train_samples_per_second": 1.3,
            "train_steps_per_second": 0.08,
            "total_flos": 0.0,
            "train_loss": 0.011,
            "epoch": 1.0,
            "step": steps,
        }
        lines.append(json.dumps(summary))
    text = "\n".join(lines) + "\n"
    if partial_last:
        text += json.dumps(step_entry(steps + 1, steps, rng, kl))[:57]  # caught mid-write
    (run_dir / "metrics.jsonl").write_text(text)
    return run_dir


def write_eval_summary(path):
    summary = {
        "models": {
            "base": {
                "strict": 0.0887,
                "numeric": 0.1,
                "flexible": 0.31,
                "formatted": 0.42,
                "mean_tokens": 210.5,
                "cut_off": 0.08,
                "n": 1319,
            },
            "tuned": {
                "strict": 0.6528,
                "numeric": 0.66,
                "flexible": 0.7,
                "formatted": 0.97,
                "mean_tokens": 260.0,
                "cut_off": 0.02,
                "n": 1319,
            },
        },
        "dataset": "openai/gsm8k",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


def assert_pngs(paths):
    assert paths
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        assert len(data) > 5000, path  # a figure with curves, not an empty canvas


def printed_paths(capsys):
    return [plot.Path(line) for line in capsys.readouterr().out.splitlines()]


# --- reading the log -------------------------------------------------------------------------------------


def test_load_metrics_skips_partial_line_and_summary_and_sorts(tmp_path):
    entries = run_metrics.load_metrics(write_run(tmp_path / "run"))
    assert [e["step"] for e in entries] == list(range(1, 21))
    assert all("train_runtime" not in e for e in entries)


def test_load_metrics_keeps_the_last_entry_of_a_step_logged_twice(tmp_path):
    lines = [
        {"loss": 1.0, "step": 1},
        {"loss": 2.0, "step": 2},
        {"loss": 3.0, "step": 2},
        {"eval_loss": 0.5, "step": 2},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    assert [e["loss"] for e in run_metrics.load_metrics(tmp_path)] == [1.0, 3.0]


def test_load_metrics_of_a_run_with_nothing_logged_yet_is_empty(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert run_metrics.load_metrics(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        run_metrics.load_metrics(tmp_path / "empty")


def test_ema_is_debiased_and_skips_nan():
    assert run_metrics.ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])
    smoothed = run_metrics.ema([1.0, math.nan, 3.0], 0.5)
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx((0.25 + 1.5) / 0.75)


# --- drawing ---------------------------------------------------------------------------------------------


def test_run_figures_are_written_and_printed(tmp_path, capsys):
    run = write_run(tmp_path / "my-run")
    assert plot.main([str(run)]) == 0
    paths = printed_paths(capsys)
    names = {p.name for p in paths}
    assert names == {"rewards.png", "completion_length.png", "loss.png", "kl_entropy.png", "learning_rate.png"}
    assert all(p.parent == run / "plots" for p in paths)
    assert_pngs(paths)


def test_output_dir_with_dashes_and_no_kl_run_in_progress(tmp_path, capsys):
    run = write_run(tmp_path / "run", kl=False, finished=False)
    assert plot.main([str(run), "--output-dir", str(tmp_path / "figs"), "--smoothing", "0"]) == 0
    paths = printed_paths(capsys)
    assert {p.parent for p in paths} == {tmp_path / "figs"}
    assert "kl_entropy.png" in {p.name for p in paths}  # entropy alone still gets its panel
    assert_pngs(paths)


def test_eval_summary_bar_chart(tmp_path, capsys):
    summary = write_eval_summary(tmp_path / "eval" / "summary.json")
    assert plot.main(["--eval", str(summary), "--output_dir", str(tmp_path / "out")]) == 0
    paths = printed_paths(capsys)
    assert [p.name for p in paths] == ["eval_accuracy.png"]
    assert_pngs(paths)


def test_eval_summary_in_the_run_dir_is_drawn_too(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    write_eval_summary(run / "summary.json")
    assert plot.main([str(run)]) == 0
    assert "eval_accuracy.png" in {p.name for p in printed_paths(capsys)}


def test_eval_schema_variants_and_junk():
    scores = plot_eval.parse_eval_summary({"base": {"strict": 0.1, "flexible": {"accuracy": 0.3}, "n": "?"}, "meta": 3})
    assert [(s.name, s.accuracies, s.n) for s in scores] == [("base", {"strict": 0.1, "flexible": 0.3}, None)]
    listed = plot_eval.parse_eval_summary({"models": [{"name": "tuned", "numeric": 0.5}]})
    assert listed[0].name == "tuned"
    with pytest.raises(plot.PlotError, match="no model with any of strict"):
        plot_eval.parse_eval_summary({"models": {"base": {"accuracy": "high"}}})


# --- errors: one line on stderr, exit code 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "run directory not found"),
        (lambda d: d.mkdir(), "no metrics file"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("\n")), "empty, nothing logged yet"),
        (
            lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"train_runtime": 1.0, "step": 0}\n{"lo')),
            "no training-step entries",
        ),
    ],
    ids=["no-dir", "no-file", "empty", "summary-only"],
)
def test_unusable_run_dir_exits_2_with_one_line(tmp_path, capsys, setup, message):
    run = tmp_path / "run"
    setup(run)
    assert plot.main([str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and captured.err.startswith("plot.py: error:")


def test_bad_eval_summary_exits_2(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{not json")
    assert plot.main(["--eval", str(tmp_path / "summary.json")]) == 2
    assert "not readable JSON" in capsys.readouterr().err


def test_command_line_end_to_end(tmp_path):
    run = write_run(tmp_path / "run")
    ok = subprocess.run([sys.executable, "plot.py", str(run)], cwd=REPO, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.split()) == 5
    missing = subprocess.run(
        [sys.executable, "plot.py", str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2 and "run directory not found" in missing.stderr


def test_only_a_corrupt_complete_line_is_reported(tmp_path):
    good = json.dumps({"loss": 1.0, "step": 1})
    (tmp_path / "metrics.jsonl").write_text(f"{good}\n{{broken\n{good[:10]}")
    entries, unreadable = run_metrics.read_jsonl(tmp_path / "metrics.jsonl")
    assert len(entries) == 1 and unreadable == 1  # the unterminated last line is a write in progress


def test_held_out_accuracy_is_drawn_next_to_the_reward_and_kept_out_of_the_reward_panels(tmp_path, monkeypatch):
    run = tmp_path / "run"
    write_run(run, steps=10, partial_last=False)
    with open(run / "metrics.jsonl", "a") as f:
        for step in (0, 5, 10):
            f.write(json.dumps({"eval_loss": 0.0, "eval/strict": step / 20, "eval/formatted": 0.9,
                                "eval/temperature": 0.9, "step": step}) + "\n")  # fmt: skip
        f.write(json.dumps({"rewards/strict/mean": 0.3, "rewards/strict/std": 0.1, "reward": 1.0, "step": 11}) + "\n")
    titles, curves = [], []
    finish, curve = plot.finish_panel, plot.draw_curve
    monkeypatch.setattr(plot, "finish_panel", lambda ax, title, *a, **k: (titles.append(title), finish(ax, title, *a, **k)))
    monkeypatch.setattr(plot, "draw_curve", lambda ax, s, v, label, *a, **k: (curves.append(label), curve(ax, s, v, label, *a, **k)))
    written = plot.plot_run(run)
    assert (run / "plots" / "heldout_accuracy.png") in written
    assert (run / "plots" / "heldout_accuracy.png").read_bytes().startswith(PNG_MAGIC)
    assert "held-out problems, sampled at temperature 0.9" in titles
    assert any(label.startswith("training reward (right axis)") for label in curves)
    assert "strict" not in titles  # the weight-0 score is not drawn as a reward panel


def test_no_held_out_figure_without_evaluations(tmp_path):
    run = tmp_path / "run"
    write_run(run, steps=5, partial_last=False)
    assert "heldout_accuracy.png" not in [p.name for p in plot.plot_run(run)]


# ---------------------------------------------------------------------------------------------------------
# Completion lengths: what trl logs when every completion is cut at the limit


def cut_off_run(steps: int = 12, terminated_from: int | None = None) -> list[dict]:
    """Log entries of a run whose completions all hit the 32-token limit (trl then logs terminated length 0)."""
    entries = []
    for step in range(1, steps + 1):
        ended = terminated_from is not None and step >= terminated_from
        entries.append({
            "step": step, "loss": 0.0, "completions/max_length": 32.0, "completions/mean_length": 32.0 - ended,
            "completions/min_length": 32.0 - 2 * ended, "completions/clipped_ratio": 0.5 if ended else 1.0,
            "completions/mean_terminated_length": 30.0 if ended else 0.0,
        })  # fmt: skip
    return entries


def drawn_pixels(fig, color: str) -> int:
    """How many pixels inside the length axes show `color` (the legend, outside the axes, is not counted)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255
    box = fig.axes[0].get_window_extent()
    height = image.shape[0]
    inside = image[int(height - box.y1) : int(height - box.y0), int(box.x0) : int(box.x1)]
    return int((np.abs(inside - np.array(to_rgb(color))).max(axis=-1) < 0.08).sum())


def test_equal_length_series_all_stay_visible():
    fig = plot.completion_length_figure(cut_off_run(), plot.Style("run", smoothing=0.0))
    for name, color in (("max", "C3"), ("mean", "C0"), ("min", "C2")):
        assert drawn_pixels(fig, color) > 50, f"the {name} line is hidden"


def test_terminated_length_is_drawn_only_where_a_completion_terminated():
    # Nothing terminated: trl's 0 is no length, so there is no line (and no legend entry) for it.
    fig = plot.completion_length_figure(cut_off_run(), plot.Style("run", smoothing=0.0))
    assert not any("terminated" in line.get_label() for line in fig.axes[0].get_lines())
    assert drawn_pixels(fig, "C1") == 0
    # From step 7 some did: the line starts there, never at 0.
    fig = plot.completion_length_figure(cut_off_run(terminated_from=7), plot.Style("run", smoothing=0.0))
    (line,) = [line for line in fig.axes[0].get_lines() if "terminated" in line.get_label()]
    values = list(line.get_ydata())
    assert all(math.isnan(v) for v in values[:6]) and values[6:] == [30.0] * 6
