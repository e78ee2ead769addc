"""Held-out accuracy during training: problems kept out of training, scored with evaluate.py's scorer."""

import json

import pytest
from conftest import REPO, SHARED
from helpers import run_script, smoke_error_line

import heldout
from run_metrics import heldout_entries
from scoring import score_completion

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


def test_holdout_is_disjoint_from_training_and_chosen_by_question_alone():
    from datasets import Dataset

    questions = [f"q{i}" for i in range(50)]
    dataset = Dataset.from_dict({"question": questions, "answer": [str(i) for i in range(50)]})
    held_questions = heldout.heldout_questions(questions, 10)
    train, held = heldout.split_holdout(dataset, held_questions)
    assert len(train) == 40 and len(held) == 10 and set(held["question"]) == held_questions
    assert not set(train["question"]) & set(held["question"])
    # Order, duplicates and other questions do not change the choice; a smaller choice is part of a larger one.
    assert heldout.heldout_questions(questions[::-1] + questions[:5], 10) == held_questions
    assert heldout.heldout_questions(questions, 5) < held_questions
    with pytest.raises(ValueError, match="leaves no problems to train on"):
        heldout.split_holdout(dataset, set(questions))


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
    smoke_error_line("train.py", tmp_path / "out", *args, message=message)


def sft_and_grpo_data(tmp_path, sft_argv, train_argv, tokenizer_dir):
    """(sft.py's training rows, train.py's training rows, train.py's held-out rows), as their main() loads them."""
    from transformers import AutoTokenizer

    import sft
    import train

    sft_args, sft_training, _ = sft.parse_args([*map(str, sft_argv), "--output_dir", str(tmp_path / "sft")])
    sft_rows = sft.load_training_data(sft_args, sft_training)
    script_args, training_args, _, _ = train.parse_args([*map(str, train_argv), "--output_dir", str(tmp_path / "grpo")])
    train_rows, held, _ = train.load_data(script_args, training_args, AutoTokenizer.from_pretrained(tokenizer_dir))
    return sft_rows, train_rows, held


def test_real_recipe_never_cold_starts_on_the_problems_grpo_holds_out(tmp_path):
    """Held-out accuracy is only worth watching if neither stage trained on those problems: with both recipes'
    defaults (seed 1907, 1000 SFT problems, 100 held out; ~13 of the 100 would otherwise be among the 1000)."""
    gsm8k, tokenizer_dir = SHARED / "data" / "gsm8k", SHARED / "tokenizers" / "qwen2.5"
    if not (gsm8k / "train.jsonl").is_file() or not tokenizer_dir.is_dir():
        pytest.skip("needs GSM8K and the Qwen2.5 tokenizer in ../shared")
    sft_rows, train_rows, held = sft_and_grpo_data(
        tmp_path, ["--dataset_name", gsm8k], ["--dataset_name", gsm8k, "--use_cpu"], tokenizer_dir
    )
    cold_started = {row["prompt"][-1]["content"] for row in sft_rows}
    assert len(sft_rows) == 1000 and len(held) == 100
    assert len(set(held["question"]) & cold_started) == 0
    assert not set(held["question"]) & set(train_rows["question"])


@pytest.mark.parametrize("holdout", ["100", "50"])  # demo.py's held-out set, and --quick's
def test_demo_never_cold_starts_on_the_problems_grpo_holds_out(tmp_path, holdout):
    import miniature

    data_dir = miniature.write_dataset(tmp_path / "data", seed=0)
    cold_dir = miniature.write_cold_start(tmp_path / "cold", data_dir, seed=0)
    model_dir = miniature.build_model(tmp_path / "model", data_dir, shape=dict(miniature.MINIATURE_SHAPE, hidden_size=32))
    recipes = REPO / "recipes"
    sft_rows, train_rows, held = sft_and_grpo_data(
        tmp_path,
        ["--config", recipes / "miniature-sft.yaml", "--dataset_name", cold_dir, "--seed", "0"],
        ["--config", recipes / "miniature-grpo.yaml", "--dataset_name", data_dir, "--seed", "0", "--eval_holdout", holdout],
        model_dir,
    )
    cold_started = {row["prompt"][-1]["content"] for row in sft_rows}
    assert len(held) == int(holdout) and len(train_rows) == 4000 - int(holdout)
    assert len(set(held["question"]) & cold_started) == 0


def test_the_held_out_evaluation_generates_and_scores_without_a_loss_pass(tmp_path, monkeypatch):
    # trl's evaluation runs the policy over every held-out answer again for a GRPO loss of its own samples, a
    # figure of no use: on the CPU ~13 s of each ~31 s evaluation of 32 SmolLM2 answers, and on a whole
    # evaluation batch at once the run's peak memory.
    from trl import GRPOTrainer

    import train

    seen, original = [], GRPOTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        seen.append("train" if model.training else "eval")
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "compute_loss", recording)
    train.main(["--smoke", "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--eval_holdout", "4",
                "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                "--per_device_eval_batch_size", "4", "--save_merged", "false"])  # fmt: skip
    assert "train" in seen and "eval" not in seen, seen
    assert heldout_entries(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
