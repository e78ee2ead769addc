"""train.py end to end on CPU with the tiny model: real GRPO steps, outputs, resume, Ctrl-C, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import REPO
from helpers import run_script, smoke_error_line

import backends
import train

pytestmark = pytest.mark.slow


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_trains_real_steps_and_logs_rewards(smoke_run):
    steps = [m for m in metrics(smoke_run) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    for entry in steps:
        assert math.isfinite(entry["loss"]) and math.isfinite(entry["grad_norm"])
        assert "rewards/custom_reward_func/mean" in entry and "completions/mean_length" in entry
        assert math.isfinite(entry["kl"])  # beta 0.04 from the recipe: trl logs kl only when beta > 0


def test_smoke_run_writes_adapter_config_and_checkpoints(smoke_run):
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "run_config.json"):
        assert (smoke_run / name).is_file(), name
    assert sorted(p.name for p in smoke_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    config = json.loads((smoke_run / "run_config.json").read_text())
    assert config["backend"] == "hf" and config["processes"] == 1
    assert config["training"]["learning_rate"] == 1e-3 and config["training"]["beta"] == 0.04
    assert config["script"]["reward_funcs"] == ["custom"]
    assert sorted(p.name for p in (smoke_run / "completions").glob("*.parquet"))[-1] == "completions_00004.parquet"


def test_the_console_shows_a_short_sample_not_every_completion(smoke_run):
    from prompts import SYSTEM_PROMPT

    stdout = (smoke_run.parent / "stdout.txt").read_text()
    assert SYSTEM_PROMPT.strip().splitlines()[0] not in stdout  # trl's table printed it in every row, every step
    assert stdout.count("question: ") == 1 and "step 1: 1 question of 2 (4 completions in " in stdout
    assert stdout.count("  completion ") == 2  # num_completions_to_print
    completion_lines = stdout.split("question: ")[1].split("\n{")[0].splitlines()
    assert len(completion_lines) <= 1 + 2 * (1 + 4 + 1)  # each completion cut to 4 lines (+ a "more lines" note)
    import pandas as pd

    # Every step's completions are still on disk, with their rewards and advantages.
    for step in (1, 2, 3, 4):
        table = pd.read_parquet(smoke_run / "completions" / f"completions_{step:05d}.parquet")
        assert list(table.columns) == [
            "step", "prompt", "completion", "custom_reward_func", "strict", "numeric", "flexible", "formatted", "advantage"
        ]  # fmt: skip
        assert len(table) == 4 and set(table["step"]) == {step}


def test_adapter_reloads_with_plain_peft_and_generates(smoke_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_config = json.loads((smoke_run / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, smoke_run)
    tokenizer = AutoTokenizer.from_pretrained(smoke_run)
    assert adapter_config["r"] == 8 and set(adapter_config["target_modules"]) >= {"q_proj", "down_proj"}
    inputs = tokenizer("Tom has 3 apples.", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_merged_model_loads_without_peft(smoke_run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smoke_run / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_resume_continues_at_the_right_step(tmp_path):
    out = tmp_path / "run"
    first = run_script("train.py", "--smoke", "--output_dir", out, "--max_steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoint-2").is_dir()
    again = run_script("train.py", "--smoke", "--output_dir", out, "--max_steps", "4")
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = run_script("train.py", "--smoke", "--output_dir", out, "--max_steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2, 3, 4]
    # One held-out evaluation per step: step 2's is kept from the first run, not made again on resuming.
    assert [m["step"] for m in metrics(out) if "eval/strict" in m] == [0, 2, 4]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # --resume_from_checkpoint PATH continues that checkpoint, here into a new folder.
    branch = tmp_path / "branch"
    resumed = run_script("train.py", "--smoke", "--output_dir", branch, "--max_steps", "3",
                         "--resume_from_checkpoint", out / "checkpoint-2")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in metrics(branch) if "loss" in m] == [3]
    assert json.loads((branch / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--smoke", "--output_dir", str(out), "--max_steps", "100000",
         "--save_steps", "100000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert (out / "metrics.jsonl").exists(), "training did not start"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]  # 128 + SIGINT: not a success
    assert "Interrupted" in stderr
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "optimizer.pt").is_file()
    step = int(checkpoints[0].name.split("-")[1])
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"interrupted at step {step}: checkpoint saved in {checkpoints[0]}. To continue: python ")
    assert last.endswith(" --resume") and "done:" not in stdout
    assert not (out / "adapter_model.safetensors").exists()  # no finished-looking adapter at the top
    assert not any("train_runtime" in m for m in metrics(out))  # nor a finished-looking metrics file


# A Ctrl-C once training is over, stood in for by the interrupted call raising KeyboardInterrupt.
INTERRUPT = (
    "import sys, train, trl\n"
    "def ctrl_c(*args, **kwargs):\n    raise KeyboardInterrupt\n"
    "def train_then_ctrl_c_on_save(self, *args, **kwargs):\n"
    "    TRAIN(self, *args, **kwargs)\n    self.save_model = ctrl_c\n"
    "TRAIN = trl.GRPOTrainer.train\n"
    "if sys.argv[1] == 'merge':\n    train.save_merged_model = ctrl_c\n"
    "else:\n    trl.GRPOTrainer.train = train_then_ctrl_c_on_save\n"
    "train.main(sys.argv[2:])\n"
)


@pytest.mark.parametrize("interrupted", ["merge", "save"])
def test_ctrl_c_after_training_says_what_was_written_and_how_to_finish(tmp_path, interrupted):
    out = tmp_path / "run"
    argv = ["--smoke", "--output_dir", str(out), "--max_steps", "2", "--save_merged"]
    result = subprocess.run([sys.executable, "-c", INTERRUPT, interrupted, *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 130, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    if interrupted == "merge":
        assert last.startswith(f"interrupted while writing the merged model to {out}/merged, after training ended at "
                               f"step 2: the adapter + tokenizer are in {out}; the last checkpoint is {out}/checkpoint-2.")  # fmt: skip
    else:
        assert last.startswith(f"interrupted while saving the adapter to {out}, after training ended at step 2: the "
                               f"final model was not written; the last checkpoint is {out}/checkpoint-2.")  # fmt: skip
    assert " To finish: python train.py " in last and last.endswith(" --resume")
    assert "interrupted at step" not in result.stdout  # the training loop's message is for a stop mid-training
    if interrupted == "save":
        assert not (out / "adapter_model.safetensors").exists()
        return
    # The printed command finishes the run: nothing left to train, the adapter and merged model written.
    finish = run_script("train.py", *argv, "--resume")
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "done: 2 steps" in finish.stdout
    assert (out / "adapter_model.safetensors").is_file() and (out / "merged" / "config.json").is_file()
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2]
    assert [m["step"] for m in metrics(out) if "eval/strict" in m] == [0, 2]
    # The trained weights, not a fresh adapter: the adapter written equals checkpoint-2's.
    from safetensors.numpy import load_file

    final, checkpoint = load_file(out / "adapter_model.safetensors"), load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    assert final.keys() == checkpoint.keys() and all((final[k] == checkpoint[k]).all() for k in final)


def test_two_processes_on_cpu(tmp_path):
    # The README's command (torchrun); `accelerate launch --cpu` would start one process only.
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(REPO / "train.py"), "--smoke",
         "--output_dir", str(out), "--max_steps", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # A process's one-line refusal first: the launcher's report of it fills the tail.
    refusals = [line for line in result.stderr.splitlines() if "train.py: error:" in line]
    assert result.returncode == 0, "\n".join(refusals) + "\n" + result.stderr[-3000:]
    assert json.loads((out / "run_config.json").read_text())["processes"] == 2
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2]
    assert result.stdout.count("done: 2 steps") == 1  # printed by the main process only
    import pandas as pd

    # The completions of both processes, gathered: 2 x 4 per step.
    assert len(pd.read_parquet(out / "completions" / "completions_00002.parquet")) == 8


def test_too_few_problems_for_one_step_fail_before_the_model_loads(tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--smoke", "--output_dir", out, "--max_samples", "1", timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "error: 1 problem (--max_samples 1): fewer than one training step takes, 2 " in last
    assert "--per_device_train_batch_size, --gradient_accumulation_steps, --num_generations" in last
    assert not (out / "run_config.json").exists()  # written once the model is loaded


def test_evaluate_scores_the_adapter_train_wrote_against_its_base(smoke_run, tmp_path):
    result = run_script("evaluate.py", "--checkpoint", smoke_run, "--smoke", "--limit", "4", "--output_dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["models"]) == {"base", "tuned"} and summary["models"]["tuned"]["n"] == 4
    assert summary["settings"]["base_model"] == str(smoke_run / "base-model")
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == ["base", "tuned"]


def test_custom_reward_from_a_file(tmp_path):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def length_reward(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n")
    out = tmp_path / "run"
    result = run_script(
        "train.py", "--smoke", "--output_dir", out, "--max_steps", "1",
        "--reward_funcs", "custom", f"{reward_file}:length_reward", "--reward_weights", "1.0", "0.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rewards/length_reward/mean" in [m for m in metrics(out) if "loss" in m][0]


# --- bad input: one line, exit code 2, before any model loads ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reward_funcs", "custom", "nope"], "unknown reward function(s) 'nope'; choose from: custom"),
        (["--per_device_train_batch_size", "3"], "must be divisible by num_generations"),
        (["--num_generations", "1", "--per_device_train_batch_size", "1"], "at least 2 generations"),
        (["--max_prompt_length", "1000", "--max_completion_length", "100"], "exceeds max_seq_length 1024"),
        (["--dataset_name", "/no/such/gsm8k.jsonl"], "dataset /no/such/gsm8k.jsonl: no such file or folder"),
        (["--resume"], "--resume: no checkpoint-* folder in"),
        (["--backend", "unsloth"], "backend 'unsloth' needs a CUDA GPU"),
        (["--backend", "tpu"], "unknown backend 'tpu'; choose from: auto, unsloth, hf"),
        (["--reward_funcs", "custom", "--reward_weights", "1", "2"], "2 reward_weights for 1 reward_funcs"),
        (["--gpu_memory_utilization", "1.5"], "gpu_memory_utilization must be in (0, 1]"),
        (["--learning_rat", "1"], "unknown option --learning_rat (did you mean --learning_rate?)"),
        (["--reward_funcs", "missing.py:fn"], "no such Python file"),
        (["--model_name_or_path", "/no/such/model"], "model '/no/such/model' not found: no local folder with config.json"),
        (["--model_name_or_path", "nobody/no-such-model"], "not in the local Hugging Face cache"),
        (["--load_in_4bit", "--save_merged"], "--save_merged with --load_in_4bit: the hf backend cannot write"),
    ],
)
def test_bad_input_fails_fast_with_one_line(tmp_path, args, message):
    smoke_error_line("train.py", tmp_path / "out", *args, message=message)
    assert not (tmp_path / "out" / "base-model").exists()  # failed before building/loading any model


def test_non_writable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_script("train.py", "--smoke", "--output_dir", blocker / "out", timeout=60)
    assert result.returncode == 2 and "is not writable" in result.stderr


def test_config_file_layers_and_unknown_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("learning_rate: 0.5\nmax_steps: 7\n")
    script_args, training_args, backend, _ = train.parse_args(["--smoke", "--config", str(good), "--max_steps", "3"])
    assert training_args.learning_rate == 0.5  # file over the smoke defaults
    assert training_args.max_steps == 3  # command line over the file
    assert training_args.adam_beta2 == 0.99 and training_args.weight_decay == 0.1  # the recipe underneath
    assert script_args.lora_r == 8 and backend == "hf"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.5\n")
    result = run_script("train.py", "--smoke", "--config", bad, timeout=60)
    assert result.returncode == 2 and f"{bad}: unknown key 'learning_rat' (did you mean 'learning_rate'?)" in result.stderr


def test_the_recipe_takes_the_blogs_32_prompts_per_step():
    # trl derives the generation batch (per_device_train_batch_size x processes x steps_per_generation, which
    # defaults to gradient_accumulation_steps); a change in that derivation changes the prompts per step.
    _, args, _, _ = train.parse_args(["--backend", "hf"])
    assert args.generation_batch_size // args.num_generations == 32


def test_the_recipes_gpu_settings_are_switched_off_on_the_cpu():
    # On this CPU machine the recipe's GPU-only settings are switched off rather than failing.
    _, args, _, notes = train.parse_args(["--backend", "hf"])
    assert args.bf16 is False and args.optim.value == "adamw_torch" and args.use_vllm is False
    assert any(note.startswith("bf16 off") for note in notes)


def test_dashed_flags_work_like_underscored_ones():
    script_args, args, _, _ = train.parse_args(["--smoke", "--lora-r", "4", "--learning-rate", "0.25"])
    assert script_args.lora_r == 4 and args.learning_rate == 0.25


# --- the unsloth backend, against a stand-in module with unsloth's API --------------------------------------


@pytest.mark.parametrize("fast_inference", [True, False])
def test_unsloth_backend_makes_the_blogs_calls(monkeypatch, fast_inference):
    # The keywords are FastLanguageModel.from_pretrained's / get_peft_model's in unsloth 2026.10.9 (models/loader.py).
    calls = []

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls.append(("from_pretrained", kwargs))
            return "model", "tokenizer"

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls.append(("get_peft_model", {"model": model, **kwargs}))
            return "peft-model"

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    script_args, training_args, _, _ = train.parse_args(["--backend", "hf"])
    script_args.fast_inference = fast_inference
    assert backends.load_unsloth(script_args, training_args) == ("peft-model", "tokenizer", None)
    assert calls == [
        # use_exact_model_name: the model the user named, not Unsloth's unsloth/... copy of it.
        ("from_pretrained", dict(model_name="Qwen/Qwen2.5-0.5B-Instruct", use_exact_model_name=True,
                                 max_seq_length=1024, load_in_4bit=False, fast_inference=fast_inference,
                                 max_lora_rank=32, gpu_memory_utilization=0.8)),
        ("get_peft_model", dict(model="model", r=32, lora_alpha=64, use_gradient_checkpointing="unsloth",
                                random_state=1907, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"])),
    ]


@pytest.mark.parametrize(
    ("requested", "cuda", "unsloth", "expected"),
    [("auto", True, True, "unsloth"), ("auto", True, False, "hf"), ("auto", False, True, "hf"),
     ("hf", True, True, "hf"), ("unsloth", True, True, "unsloth")],
)
def test_backend_choice(monkeypatch, requested, cuda, unsloth, expected):
    monkeypatch.setattr(backends, "cuda_available", lambda: cuda)
    monkeypatch.setattr(backends, "is_installed", lambda name: unsloth)
    assert backends.choose_training_backend(requested)[0] == expected


def run_with_stand_in_unsloth(tmp_path, unsloth_source: str, code: str, *argv: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where CUDA is reported present and `unsloth` is a stand-in package."""
    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(unsloth_source)
    code = "import sys, backends, checks, train\nbackends.cuda_available = checks.cuda_available = lambda: True\n" + code
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_unsloth_is_imported_before_trl(tmp_path):
    # The stand-in records what was already imported when it was.
    result = run_with_stand_in_unsloth(
        tmp_path,
        "import sys\nIMPORTED_FIRST = not any(m in sys.modules for m in ('trl', 'transformers', 'peft'))\n",
        "s, t, backend, notes = train.parse_args(['--learning_rate', '1e-5'])\nimport unsloth\n"
        "print(backend, unsloth.IMPORTED_FIRST)\n",
    )
    assert result.stdout.split()[-2:] == ["unsloth", "True"], result.stderr[-2000:]


def test_a_failing_unsloth_import_is_one_line_naming_the_way_round(tmp_path):
    # The stand-in fails to import, as a broken CUDA install does.
    result = run_with_stand_in_unsloth(
        tmp_path,
        "raise ImportError('libcudart.so.12: cannot open shared object file: No such file or directory\\nmore')\n",
        "train.main(sys.argv[1:])\n",
        "--output_dir", str(tmp_path / "out"),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == (
        "train.py: error: backend unsloth (CUDA GPU and unsloth found): import unsloth failed: libcudart.so.12: "
        "cannot open shared object file: No such file or directory; --backend hf trains without it"
    )
    assert not (tmp_path / "out").exists()  # nothing written, no model loaded


def test_grpo_wiring_learns_a_toy_reward():
    # tests/learning_check.py trains through train.main on a reward a random model can climb.
    result = run_script("tests/learning_check.py", "--steps", "30", timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "learning check: PASS" in result.stdout
