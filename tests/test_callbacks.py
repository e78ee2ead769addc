"""Resuming a run: metrics.jsonl cut back to the checkpoint safely (run_metrics.py) by one process (runs.py); callbacks.py."""

import json
import pathlib
import time

import pytest

import callbacks
import runs
from run_metrics import trim_metrics


def write_metrics(folder, steps):
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps({"loss": 1.0, "step": step}) + "\n" for step in steps))
    return path


def steps_in(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_trim_keeps_the_steps_up_to_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    path = write_metrics(tmp_path, [1, 2, 3, 4])
    trim_metrics(tmp_path, 2)
    assert steps_in(path) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # nothing left beside it


def test_only_the_main_process_trims(tmp_path, monkeypatch):
    """torchrun starts every rank on the same folder: a second writer would race the first."""
    path = write_metrics(tmp_path, [1, 2, 3, 4])
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    monkeypatch.setenv("RANK", "1")
    assert runs.resume_metrics(str(tmp_path), str(checkpoint)) == 2
    assert steps_in(path) == [1, 2, 3, 4]


def test_a_crash_while_trimming_keeps_the_whole_history(tmp_path, monkeypatch):
    """The disk fills up halfway through writing: the old file must survive whole."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    path = write_metrics(tmp_path, [1, 2, 3, 4])
    writes = []

    def half_then_full_disk(self, text, *args, **kwargs):
        writes.append(self)
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        trim_metrics(tmp_path, 2)
    assert writes, "the trim wrote nothing: the crash was not exercised"
    assert steps_in(path) == [1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_last_heldout_step_reads_evaluations_up_to_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    entries = [{"eval/strict": 0.1, "step": 0}, {"loss": 1.0, "step": 1}, {"eval/strict": 0.2, "step": 2},
               {"eval/strict": 0.3, "step": 4}]  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert callbacks.last_heldout_step(tmp_path, 3) == 2
    assert callbacks.last_heldout_step(tmp_path, 4) == 4
    assert callbacks.last_heldout_step(tmp_path / "nowhere", 4) is None


def test_step_time_counts_generation_and_rewards_inside_steps_only():
    clock = callbacks.StepTimeCallback()

    class Model:
        def generate(self, seconds):
            time.sleep(seconds)
            return "tokens"

    def custom_reward_func(completions, **kwargs):
        time.sleep(0.02)
        return [1.0] * len(completions)

    model = Model()
    (reward,) = clock.timed_rewards([custom_reward_func])
    assert reward.__name__ == "custom_reward_func"  # trl's metric name
    clock.on_train_begin(None, None, None, model=model)
    model.generate(0.05)  # a held-out evaluation before the first step: not counted
    for _ in range(2):
        clock.on_step_begin(None, None, None)
        assert model.generate(0.03) == "tokens" and reward(["a", "b"]) == [1.0, 1.0]
        clock.on_step_end(None, None, None)
    evaluation = {"eval_loss": 0.0}
    clock.on_log(None, None, None, logs=evaluation)
    assert evaluation == {"eval_loss": 0.0}
    logs = {"loss": 0.1, "step_time": 0.2}
    clock.on_log(None, None, None, logs=logs)
    assert 0.03 <= logs["generation_time"] < 0.05  # the mean of the two steps' 0.03 s
    assert 0.02 <= logs["reward_time"] < 0.04
    logs = {"loss": 0.1, "step_time": 0.2}  # the next period: no steps since the last log
    clock.on_log(None, None, None, logs=logs)
    assert "generation_time" not in logs
    clock.on_train_end(None, None, None, model=model)
    assert "generate" not in vars(model)


def test_step_time_leaves_out_what_was_not_called():
    clock = callbacks.StepTimeCallback()  # trl's vLLM rollouts: the model's generate is never called
    clock.on_step_begin(None, None, None)
    clock.on_step_end(None, None, None)
    logs = {"loss": 0.1, "step_time": 0.2}
    clock.on_log(None, None, None, logs=logs)
    assert "generation_time" not in logs and "reward_time" not in logs


def test_step_time_puts_back_a_generate_wrapper_of_its_own():
    clock = callbacks.StepTimeCallback()

    class Model:
        def generate(self):
            return "plain"

    model = Model()
    model.generate = lambda: "merged"  # lora_merge.generate_merged's wrapper, installed before training
    clock.on_train_begin(None, None, None, model=model)
    clock.on_step_begin(None, None, None)
    assert model.generate() == "merged"
    clock.on_train_end(None, None, None, model=model)
    assert model.generate() == "merged"  # the final held-out evaluation still generates merged


def smoke_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_splits_each_step_time_into_generation_and_scoring(smoke_run):
    steps = [m for m in smoke_metrics(smoke_run) if "loss" in m]
    for entry in steps:
        assert 0 < entry["generation_time"] and 0 < entry["reward_time"]
        assert entry["generation_time"] + entry["reward_time"] < entry["step_time"]
    evaluations = [m for m in smoke_metrics(smoke_run) if "eval/strict" in m]
    assert evaluations and all("generation_time" not in m for m in evaluations)
    assert "generation: the LoRA adapter folded into the weights" in (smoke_run.parent / "stdout.txt").read_text()
