"""Checks train.py runs before any model loads: the machine, the configuration, the output folder, the data size.

Each raises `options.ConfigError` with one line that names what the user wrote and what to change; train.py
prints it and exits with code 2. Nothing here imports torch at module level.
"""

from __future__ import annotations

from pathlib import Path

import data
import rewards
from backends import bf16_supported, cuda_available, find_model, is_installed
from options import ConfigError, Layers, given


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
        notes.append("use_vllm off: vLLM needs a CUDA GPU and the vllm package; generating with transformers")
        layers.set("use_vllm", False, notes[-1])
    return notes


# --- checks that need no model ---------------------------------------------------------------------------


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
    output_dir = Path(training_args.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"output_dir {output_dir} is not writable: {error.strerror}") from error
    return reward_funcs


def find_checkpoint(script_args, training_args) -> str | None:
    """The checkpoint to resume from, if --resume; refuses to silently train over existing checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(training_args.output_dir)
    if script_args.resume and last is None:
        raise ConfigError(f"--resume: no checkpoint-* folder in {training_args.output_dir}")
    if not script_args.resume and last is not None:
        raise ConfigError(
            f"{training_args.output_dir} already holds {Path(last).name}: pass --resume to continue it, "
            "or choose another --output_dir"
        )
    return last
