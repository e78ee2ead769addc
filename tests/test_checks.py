"""train.py's checks before any model loads (checks.py): in-process, on parsed arguments, no training."""

import sys
import types

import pytest
from helpers import run_script, smoke_error_line

import checks
import train
from options import ConfigError


def parsed(*argv: str):
    script_args, training_args, _, _ = train.parse_args(list(argv))
    return script_args, training_args


# --- no CUDA GPU: refuse the real run instead of starting it on the CPU -------------------------------------


def test_the_real_run_refuses_to_start_without_a_gpu(monkeypatch):
    monkeypatch.setattr(checks, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="^no CUDA GPU: .*pass --use_cpu to train on the CPU anyway"):
        checks.check_device(*parsed("--backend", "hf"))


def test_a_gpu_or_an_explicit_cpu_run_passes(monkeypatch):
    monkeypatch.setattr(checks, "cuda_available", lambda: True)
    checks.check_device(*parsed("--backend", "hf"))
    monkeypatch.setattr(checks, "cuda_available", lambda: False)
    checks.check_device(*parsed("--backend", "hf", "--use_cpu"))
    checks.check_device(*parsed("--smoke"))


@pytest.mark.parametrize(
    ("torch_cuda", "driver", "visible", "expected"),
    [
        (None, None, None, "torch 2.13.0 is a CPU-only build"),
        ("13.0", None, None, "built for CUDA 13.0, which needs NVIDIA driver R580 or newer, and no NVIDIA driver is loaded"),
        ("13.0", "550.54.15", None, "this machine runs driver 550.54.15 (too old; `nvidia-smi` shows it)"),
        ("12.8", "550.54.15", None, "driver 550.54.15 is loaded but torch finds no usable GPU"),
        ("13.0", "580.65.06", "", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
    ],
)
def test_the_refusal_says_why(torch_cuda, driver, visible, expected):
    reason = checks.missing_gpu_reason("2.13.0", torch_cuda, driver, visible)
    assert expected in reason and "--use_cpu" in reason and "\n" not in reason


def test_python_train_py_alone_explains_the_missing_gpu():
    result = run_script("train.py", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: no CUDA GPU: torch "), result.stderr


# --- the unsloth backend: what steers its generation ----------------------------------------------------------


@pytest.fixture
def unsloth_machine(monkeypatch):
    """A CUDA machine with unsloth (a stand-in module: the real one needs a GPU); returns a vllm switch."""
    installed = {"unsloth", "vllm", "bitsandbytes"}
    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    monkeypatch.setattr(
        train, "choose_training_backend", lambda requested, cpu_only=False: ("unsloth", "CUDA GPU and unsloth found")
    )
    monkeypatch.setattr(checks, "cuda_available", lambda: True)
    monkeypatch.setattr(checks, "is_installed", lambda name: name in installed)
    return installed


def test_unsloth_generates_with_its_vllm_engine_by_default(unsloth_machine):
    script_args, training_args, backend, _ = train.parse_args([])
    assert backend == "unsloth" and script_args.fast_inference is True and training_args.use_vllm is True


def test_unsloth_without_vllm_generates_on_its_own_and_says_so(unsloth_machine):
    unsloth_machine.discard("vllm")
    script_args, training_args, _, notes = train.parse_args([])
    assert script_args.fast_inference is False and training_args.use_vllm is False
    assert any(note.startswith("fast_inference off: vllm is not installed") for note in notes)
    with pytest.raises(ConfigError, match="fast_inference .--fast_inference on the command line. needs vllm"):
        train.parse_args(["--fast_inference", "true"])


def test_fast_inference_false_turns_vllm_off(unsloth_machine):
    script_args, training_args, _, _ = train.parse_args(["--fast_inference", "false"])
    assert script_args.fast_inference is False and training_args.use_vllm is False
    # Without Unsloth's engine, trl's own vLLM settings are read again.
    argv = ["--fast_inference", "false", "--use_vllm", "--vllm_gpu_memory_utilization", "0.4"]
    _, training_args, _, _ = train.parse_args(argv)
    assert training_args.use_vllm is True and training_args.vllm_gpu_memory_utilization == 0.4


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--vllm_gpu_memory_utilization", "0.5"], "vllm_gpu_memory_utilization 0.5 (--vllm_gpu_memory_utilization on "
         "the command line) is not used by Unsloth's vLLM engine: it is sized by --gpu_memory_utilization"),
        (["--vllm_max_model_length", "2048"], "it is sized by --max_seq_length"),
        (["--use_vllm", "false"], "use_vllm False (--use_vllm on the command line): Unsloth generates with its vLLM "
         "engine whenever the model has one; --fast_inference false loads the model without it"),
        (["--vllm_mode", "server"], "for trl's vLLM server pass --fast_inference false"),
    ],
)
def test_settings_unsloth_overrides_are_errors_naming_the_flag_that_steers_them(unsloth_machine, argv, expected):
    with pytest.raises(ConfigError) as error:
        train.parse_args(argv)
    assert expected in str(error.value)


def test_overridden_settings_in_a_config_file_name_the_file(unsloth_machine, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("use_vllm: false\n")
    with pytest.raises(ConfigError, match=f"use_vllm False \\({config}\\)"):
        train.parse_args(["--config", str(config)])


def test_fast_inference_is_the_unsloth_backends_switch():
    with pytest.raises(ConfigError, match="is the unsloth backend's switch; on the hf backend --use_vllm"):
        train.parse_args(["--smoke", "--fast_inference", "false"])


# --- the number of steps, known once the data is loaded ----------------------------------------------------


def test_fewer_problems_than_one_step_takes_is_an_error():
    script_args, training_args = parsed("--backend", "hf")  # the recipe: 32 problems per step
    with pytest.raises(ConfigError) as error:
        checks.check_steps(31, script_args, training_args)
    message = str(error.value)
    assert message.startswith("31 problems: fewer than one training step takes, 32 (per_device_train_batch_size 2 ")
    assert "x 1 process(es) x gradient_accumulation_steps 32 = 64 completions / num_generations 2)" in message
    assert "--max_samples" in message and "--max_steps cannot help" in message
    assert checks.check_steps(32, script_args, training_args) == 1
    assert checks.check_steps(7473, script_args, training_args) == 233  # GSM8K train: the blog's epoch


def test_a_run_of_zero_steps_is_an_error():
    with pytest.raises(ConfigError, match="no training step to run: max_steps -1, num_train_epochs 0.0"):
        checks.check_steps(100, *parsed("--backend", "hf", "--num_train_epochs", "0"))
    assert checks.check_steps(100, *parsed("--backend", "hf", "--num_train_epochs", "0", "--max_steps", "5")) == 5


# --- the output folder: resume what is there, never mix two runs -------------------------------------------


def make_checkpoint(folder, step: int):
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return checkpoint


def test_resume_from_checkpoint_is_honoured(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "old", 2)
    args = parsed("--smoke", "--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", str(checkpoint))
    assert checks.find_checkpoint(*args) == str(checkpoint)
    args = parsed("--smoke", "--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="not a checkpoint folder .*; --resume continues the newest checkpoint-"):
        checks.find_checkpoint(*args)
    with pytest.raises(ConfigError, match="give one"):
        checks.find_checkpoint(*parsed("--smoke", "--resume", "--resume_from_checkpoint", str(checkpoint)))


def test_an_earlier_runs_files_without_a_checkpoint_are_not_appended_to(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"loss": 1.0, "step": 1}\n')
    (tmp_path / "completions").mkdir()
    with pytest.raises(ConfigError, match="holds an earlier run's metrics.jsonl and completions but no checkpoint"):
        checks.find_checkpoint(*parsed("--smoke", "--output_dir", str(tmp_path)))
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "completions").rmdir()
    (tmp_path / "base-model").mkdir()  # --smoke's tiny model: not a run's output
    assert checks.find_checkpoint(*parsed("--smoke", "--output_dir", str(tmp_path))) is None


def test_a_smoke_run_in_its_own_folder_starts_it_afresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = make_checkpoint(tmp_path / "outputs" / "smoke", 4)
    train.clear_smoke_folder(*parsed("--smoke", "--resume"))  # continuing it: kept
    assert old.is_dir()
    mine = make_checkpoint(tmp_path / "mine", 4)
    train.clear_smoke_folder(*parsed("--smoke", "--output_dir", str(tmp_path / "mine")))  # the user's folder: kept
    assert mine.is_dir()
    train.clear_smoke_folder(*parsed("--smoke"))
    assert not (tmp_path / "outputs" / "smoke").exists()
    assert checks.find_checkpoint(*parsed("--smoke")) is None


def test_no_fast_inference_is_fast_inference_false(unsloth_machine):
    script_args, training_args, _, _ = train.parse_args(["--no_fast_inference"])
    assert script_args.fast_inference is False and training_args.use_vllm is False


# --- trl's vLLM generation on the hf backend: refused where it cannot train ----------------------------------


@pytest.mark.parametrize(("mode", "reason"), [("colocate", "linear.py:216"), ("server", "vllm_client.py:757")])
def test_trl_vllm_generation_on_the_cpu_is_refused_with_its_reason(monkeypatch, mode, reason):
    monkeypatch.setattr(checks, "is_installed", lambda name: True)
    with pytest.raises(ConfigError, match=f"^use_vllm .--use_vllm on the command line. with vllm_mode {mode} on the CPU: ") as refusal:
        parsed("--smoke", "--use_vllm", "true", "--vllm_mode", mode)
    assert reason in str(refusal.value) and str(refusal.value).endswith("--use_vllm false generates with transformers")


def test_trl_vllm_generation_without_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setattr(checks, "is_installed", lambda name: name != "vllm")
    with pytest.raises(ConfigError, match=r"^use_vllm .* needs vllm: pip install -r requirements.txt"):
        parsed("--smoke", "--use_vllm", "true")


def test_the_recipe_s_vllm_is_switched_off_on_the_cpu_with_a_note(monkeypatch):
    monkeypatch.setattr(checks, "is_installed", lambda name: True)
    script_args, training_args, _, notes = train.parse_args(["--use_cpu"])
    assert training_args.use_vllm is False
    assert "use_vllm off: trl's vLLM generation needs a CUDA GPU; generating with transformers" in notes


def test_train_py_refuses_cpu_vllm_in_one_line_before_loading(tmp_path):
    result = run_script("train.py", "--smoke", "--use_vllm", "true", "--output_dir", tmp_path / "run", timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("train.py: error: use_vllm (--use_vllm on the command line) ")
    assert not (tmp_path / "run" / "base-model").exists()  # the tiny model was never built


def test_processes_of_one_run_probe_output_dir_together_without_tripping_each_other(tmp_path):
    # Every process of a multi-process run checks output_dir at once: one's probe must not delete another's.
    import threading

    errors, start = [], threading.Barrier(2)

    def probe_many_times():
        start.wait()
        for _ in range(2000):
            try:
                checks.make_writable_output_dir(tmp_path / "run")
            except ConfigError as error:
                errors.append(str(error))
                return

    threads = [threading.Thread(target=probe_many_times) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind


def test_an_unwritable_output_dir_is_a_config_error_with_the_reason(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"output_dir .*file/run is not writable: Not a directory"):
        checks.make_writable_output_dir(tmp_path / "file" / "run")


@pytest.mark.parametrize(("script", "flag"), [("train.py", "--lora_r"), ("sft.py", "--lora_alpha")])
def test_a_lora_rank_or_alpha_below_one_is_one_line_before_loading(tmp_path, script, flag):
    # In a process of its own, as a user runs it (the other refusals run in-process: helpers.smoke_error_line).
    result = run_script(script, "--smoke", flag, "0", "--output_dir", tmp_path / "run", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"{script}: error: lora_r and lora_alpha must be positive")
    assert not (tmp_path / "run" / "base-model").exists()  # refused before the tiny model was built


def test_an_unknown_scale_rewards_is_one_line_before_loading(tmp_path):
    # trl itself only refuses it at the first step, after the model has loaded and the first rollouts ran.
    line = smoke_error_line("train.py", tmp_path / "run", "--scale_rewards", "std",
                            message="scale_rewards must be one of group, batch, none")  # fmt: skip
    assert "'std'" in line
    assert not (tmp_path / "run" / "base-model").exists()
