"""Held-out accuracy during training: problems kept out of training, scored with evaluate.py's scorer."""

import json

import pytest
from helpers import run_script

import heldout
from evaluate import score_completion
from run_metrics import heldout_entries

GOOD = "<reasoning>\n3+4=7\n</reasoning>\n<validate>\nok\n</validate>\n<answer>\n7\n</answer>"


def test_scorers_are_evaluates_scores_and_weigh_nothing():
    funcs, weights = heldout.with_scorers(["custom"], None)
    assert funcs[0] == "custom" and [f.__name__ for f in funcs[1:]] == ["strict", "numeric", "flexible", "formatted"]
    assert weights == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert heldout.with_scorers(["a", "b"], [2.0, 0.5])[1] == [2.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    completions = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "It is 7."}]]
    for func in funcs[1:]:
        expected = [float(score_completion(GOOD, "7")[func.__name__]), float(score_completion("It is 7.", "7")[func.__name__])]
        assert func(completions=completions, answer=["7", "7"], prompts=None) == expected
    assert funcs[1](completions=completions, answer=["7", "7"]) == [1.0, 0.0]
    assert funcs[3](completions=completions, answer=["7", "7"]) == [1.0, 1.0]  # flexible: last number


def test_holdout_is_disjoint_from_training_and_seeded():
    from datasets import Dataset

    dataset = Dataset.from_dict({"question": [f"q{i}" for i in range(50)], "answer": [str(i) for i in range(50)]})
    train, held = heldout.split_holdout(dataset, 10, seed=3)
    assert len(train) == 40 and len(held) == 10
    assert not set(train["question"]) & set(held["question"])
    assert heldout.split_holdout(dataset, 10, seed=3)[1]["question"] == held["question"]
    with pytest.raises(ValueError, match="leaves no problems to train on"):
        heldout.split_holdout(dataset, 50, seed=3)


def test_eval_log_is_renamed_and_labelled_with_its_temperature():
    logs = {"eval_rewards/strict/mean": 0.25, "eval_completions/mean_length": 80.0, "eval_loss": 0.1}
    metrics = heldout.heldout_metrics(logs, temperature=0.9)
    assert metrics == {"eval/strict": 0.25, "eval/mean_tokens": 80.0, "eval/temperature": 0.9}
    assert heldout.heldout_metrics({"loss": 1.0, "rewards/strict/mean": 0.5}) == {}
    line = heldout.describe(metrics, 100, 25)
    assert line == "held-out accuracy, step 25 (100 problems, sampled at temperature 0.9): strict 0.250, mean tokens 80"


def test_smoke_run_scores_the_held_out_problems(smoke_run):
    entries = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    evaluations = heldout_entries(entries)
    assert [e["step"] for e in evaluations] == [0, 2, 4]  # before training, every eval_steps, at the end
    for entry in evaluations:
        assert {"eval/strict", "eval/numeric", "eval/flexible", "eval/formatted", "eval/mean_tokens"} <= set(entry)
        assert entry["eval/temperature"] == 0.9
    training = [e for e in entries if "loss" in e]
    for entry in training:  # scored on training batches too (at weight 0: reward_weights below)
        assert {f"rewards/{score}/mean" for score in ("strict", "numeric", "flexible", "formatted")} <= set(entry)
    config = json.loads((smoke_run / "run_config.json").read_text())
    assert config["script"]["eval_holdout"] == 4 and config["training"]["reward_weights"] == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.slow
def test_held_out_problems_are_never_trained_on(tmp_path):
    import pandas

    out = tmp_path / "run"
    result = run_script("train.py", "--smoke", "--output_dir", out, "--max_steps", "6", "--eval_steps", "100",
                        "--eval_on_start", "false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out: 4 training problems set aside" in result.stdout
    assert "held-out accuracy, step 6 (4 problems, sampled at temperature 0.9)" in result.stdout  # the final one
    held = [json.loads(line)["question"] for line in (out / "heldout.jsonl").read_text().splitlines()]
    trained = set()
    for part in (out / "completions").glob("*.parquet"):
        trained |= {str(p) for p in pandas.read_parquet(part)["prompt"]}
    assert len(held) == 4 and len(trained) >= 6
    assert not any(question in prompt for question in held for prompt in trained)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval_holdout", "-1"], "eval_holdout must be 0 (off) or a number of problems"),
        (["--eval_holdout", "16"], "eval_holdout 16 leaves no problems to train on"),
        (["--eval_holdout", "1"], "eval_holdout 1 is smaller than one evaluation batch (2"),
        (["--eval_strategy", "no"], "pass --eval_holdout 0 to train without evaluation"),
    ],
)
def test_bad_holdout_settings_fail_with_one_line(tmp_path, args, message):
    result = run_script("train.py", "--smoke", "--output_dir", tmp_path / "out", *args, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1]
