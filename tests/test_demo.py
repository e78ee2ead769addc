"""demo.py: the recipe end to end on CPU; a cut-down run shows SFT teaching the format and GRPO moving the policy."""

import json
import os
import sys

import pytest
from helpers import run_script

import demo
from run_metrics import read_jsonl


def test_bad_flags_and_an_earlier_run_are_refused_before_anything_runs(tmp_path):
    bad = run_script("demo.py", "--grpo_steps", "0", "--output_dir", tmp_path / "x")
    assert bad.returncode == 2 and "--grpo_steps must be positive" in bad.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "demo_result.json").write_text("{}")
    again = run_script("demo.py", "--output_dir", tmp_path / "run")
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--overwrite" in again.stderr
    assert not (tmp_path / "x").exists()


def test_an_output_dir_that_is_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    done = run_script("demo.py", "--output_dir", tmp_path / "notes.txt")
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_summary_table_reports_each_model_each_kind_of_problem_the_gain_and_the_times():
    stages = [demo.Stage("fetch_model.py", 40.0), demo.Stage("sft.py", 100.0), demo.Stage("train.py (GRPO)", 200.0)]
    counts = {"n": 200, "n_one_step": 80, "n_two_step": 120}
    models = {
        "fetched": {**counts, "strict": 0.0, "strict_one_step": 0.0, "strict_two_step": 0.0, "formatted": 0.0},
        "base": {**counts, "strict": 0.3, "strict_one_step": 0.75, "strict_two_step": 0.0, "formatted": 0.99},
        "tuned": {**counts, "strict": 0.55, "strict_one_step": 0.8, "strict_two_step": 0.3833, "formatted": 1.0},
    }
    text = demo.summary_table(stages, models, [(0, 0.3), (75, 0.5)])
    assert "as fetched               0.000     0.000     0.000      0.000" in text
    assert "after SFT                0.300     0.750     0.000      0.990" in text
    assert "after GRPO               0.550     0.800     0.383      1.000" in text
    assert "gain (GRPO - SFT)       +0.250    +0.050    +0.383     +0.010" in text
    assert "80 one-step, 120 two-step" in text
    assert "0:0.30  75:0.50" in text
    assert "fetch_model.py               40 s" in text and "total after the fetch       300 s" in text


def test_strict_accuracy_is_split_by_the_number_of_steps(tmp_path):
    rows = [{"question": "q1", "answer": "1+1=<<1+1=2>>2\n#### 2"},
            {"question": "q2", "answer": "2*2=<<2*2=4>>4\n4+1=<<4+1=5>>5\n#### 5"},
            {"question": "q3", "answer": "1+2=<<1+2=3>>3\n3-1=<<3-1=2>>2\n#### 2"}]  # fmt: skip
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for label, right in (("base", {"q1"}), ("tuned", {"q1", "q3"})):
        records = [{"question": row["question"], "strict": row["question"] in right} for row in reversed(rows)]
        (tmp_path / f"{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    found = demo.strict_by_steps(tmp_path, tmp_path)
    assert found["base"] == {"n_one_step": 1, "strict_one_step": 1.0, "n_two_step": 2, "strict_two_step": 0.0}
    assert found["tuned"]["strict_two_step"] == 0.5


def test_console_shows_key_lines_that_tqdm_prefixes_with_cursor_codes(tmp_path, capsys):
    stage = demo.Stage("echo", log=tmp_path / "echo.log")
    line = "\x1b[Aheld-out accuracy, step 15 (100 problems, sampled at temperature 0.7): strict 0.800"
    demo.run_stage(stage, [sys.executable, "-c", f"print({line!r}); print('noise')"], dict(os.environ), verbose=False)
    shown = capsys.readouterr().out
    assert "held-out accuracy, step 15" in shown and "\x1b" not in shown and "noise" not in shown
    assert "noise" in stage.log.read_text()


# `demo.py --quick --seed 0` on SmolLM2-135M-Instruct, 100 test problems, greedy (docs/BENCHMARKS.md):
#   as fetched   strict 0.00, formatted 0.00 (the model never writes the tags), 56 % of answers cut off
#   after SFT    strict 0.20, formatted 0.47, 45 % cut off (12 steps: the format, half learnt)
#   after GRPO   strict 0.14, formatted 0.44,  3 % cut off at f791af7; strict 0.12, formatted 0.37, 44 % cut off at
#                b9523c4, whose rollouts draw from another random stream: 8 steps go where their draws take them;
#                strict 0.20, formatted 0.77 at 825382e (advantages not scaled by each group's spread).
#   at e654c7e (the cold start drawn from 320 answers): SFT strict 0.13, formatted 0.48; GRPO 0.20 / 0.79.
# SFT must leave a mark no unchanged model can: a trainer that does not update leaves strict and formatted at the
# fetched model's 0.00 (thresholds half the measured effects, out of reach of the few greedy answers float sums in
# another order change on another CPU). GRPO's direction after 8 steps is its draws' (above), so what is checked
# is that it moved the policy: a trainer that does not update, or a reward that gives every answer of a group the
# same score (zero advantages, no gradient at beta 0), leaves every greedy answer of the SFT model as it was;
# 8 steps changed 97 of 100 (100 of 100 at 825382e, 89 at e654c7e). Whether GRPO raises accuracy is the full demo's
# question
# (bench/demo_bench.py), and tests/learning_check.py's on a toy reward.
QUICK_MIN_SFT_STRICT = 0.06  # half of e654c7e's 0.13
QUICK_MIN_SFT_FORMATTED = 0.24  # half of its 0.48
QUICK_MIN_GRPO_CHANGED = 0.50  # share of the SFT model's greedy answers GRPO changed


@pytest.mark.slow
def test_quick_demo_shows_sft_learning_and_grpo_moving_the_policy(tmp_path):
    """The whole recipe on the real model, cut down: a broken trainer, reward or scorer leaves a stage's mark out."""
    out = tmp_path / "demo"
    done = run_script("demo.py", "--quick", "--seed", "0", "--output_dir", out, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((out / "demo_result.json").read_text())
    fetched, sft, grpo = result["fetched"], result["sft"], result["grpo"]
    assert fetched["formatted"] == 0.0 and fetched["strict"] == 0.0, result
    assert sft["strict"] >= QUICK_MIN_SFT_STRICT and sft["formatted"] >= QUICK_MIN_SFT_FORMATTED, result
    sft_answers, grpo_answers = (read_jsonl(out / "eval" / f"{label}.jsonl")[0] for label in ("base", "tuned"))
    changed = sum(a["token_ids"] != b["token_ids"] for a, b in zip(sft_answers, grpo_answers)) / len(sft_answers)
    assert len(grpo_answers) == grpo["n"] and changed >= QUICK_MIN_GRPO_CHANGED, (changed, result)
    assert len(result["heldout_curve"]) >= 2
    assert (out / "grpo" / "plots" / "heldout_accuracy.png").is_file()
    assert (out / "eval" / "plots" / "eval_accuracy.png").is_file()
    assert "after GRPO" in done.stdout and "gain" in done.stdout
