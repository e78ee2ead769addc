"""GRPO training of a small reasoning model on GSM8K: the reference blog's run, one command.

    # The blog's run on one CUDA GPU (Unsloth + vLLM; recipes/qwen2.5-0.5b-gsm8k-grpo.yaml holds the values)
    python train.py

    # Any GRPOConfig field from the command line or a YAML file (defaults < --config file < flags)
    python train.py --config my_run.yaml --learning_rate 1e-5 --num_generations 4 --per_device_train_batch_size 4

    # Offline CPU check of the whole pipeline with a tiny random model, in under a minute
    python train.py --smoke

    # Continue the newest checkpoint in output_dir; write a merged 16-bit model at the end
    python train.py --resume --save_merged

    # Several GPUs (or `--cpu` processes): data-parallel, or DeepSpeed via an accelerate config
    accelerate launch --num_processes 2 train.py --backend hf
    # Or generation on a vLLM server (one GPU) and training on the others:
    #   CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
    #   CUDA_VISIBLE_DEVICES=1,2 accelerate launch --num_processes 2 train.py --backend hf --vllm_mode server

Output in output_dir: checkpoint-N/ every save_steps, then the LoRA adapter + tokenizer (loadable by
evaluate.py and plain peft), run_config.json (the resolved configuration), metrics.jsonl (every log entry,
written as training goes) and, with --save_merged, merged/ (a full 16-bit model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import data
import rewards
from attention import GQA_SDPA
from backends import BACKENDS, BackendError, bf16_supported, cuda_available, find_model, is_installed, resolve_backend
from smoke import SAMPLE_DATA_DIR

REPO_DIR = Path(__file__).resolve().parent
RECIPE = REPO_DIR / "recipes" / "qwen2.5-0.5b-gsm8k-grpo.yaml"

# `--smoke`: the same code path at toy size, offline on CPU (the tiny model is built in output_dir).
SMOKE_OVERRIDES: dict[str, Any] = dict(
    output_dir="outputs/smoke",
    dataset_name=str(SAMPLE_DATA_DIR),
    max_steps=4,
    per_device_train_batch_size=4,  # 2 prompts x 2 completions per step
    gradient_accumulation_steps=1,
    max_completion_length=32,
    max_prompt_length=512,  # the tiny tokenizer spends more tokens on the system prompt than Qwen's
    lora_r=8,
    lora_alpha=16,
    learning_rate=1e-3,
    warmup_steps=0,
    save_steps=2,
    use_cpu=True,
    use_vllm=False,
    gradient_checkpointing=False,
)


@dataclass
class ScriptArguments:
    """What train.py adds to GRPOConfig: model, LoRA, data, reward and run control."""

    model_name_or_path: str = field(default="Qwen/Qwen2.5-0.5B-Instruct", metadata={"help": "Hub name or local folder."})
    backend: str = field(
        default="auto",
        metadata={"help": "auto (unsloth on CUDA when installed, else hf), unsloth, or hf.", "choices": list(BACKENDS)},
    )
    max_seq_length: int = field(default=1024, metadata={"help": "Longest prompt + completion, in tokens."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the base model in 4 bit (CUDA, bitsandbytes)."})
    attn_implementation: str = field(
        default=GQA_SDPA,
        metadata={
            "help": f"hf backend attention: {GQA_SDPA} (attention.py: SDPA without copying the KV heads), sdpa, eager.",
            "choices": [GQA_SDPA, "sdpa", "eager", "flash_attention_2"],
        },
    )
    lora_r: int = field(default=32, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Module names that get LoRA adapters."},
    )
    gpu_memory_utilization: float = field(
        default=0.8,
        metadata={
            "help": "Share of GPU memory for Unsloth's vLLM engine, which shares the weights with training. "
            "The hf backend's colocated vLLM keeps its own copy: set trl's --vllm_gpu_memory_utilization there."
        },
    )
    dataset_name: str = field(
        default="openai/gsm8k", metadata={"help": "Hub dataset, or a local .jsonl/.json/.parquet file or folder."}
    )
    dataset_config: str = field(default="main", metadata={"help": "Hub dataset configuration."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only this many problems (after shuffling)."})
    max_prompt_length: int = field(default=256, metadata={"help": "Drop prompts longer than this many tokens."})
    reward_funcs: list[str] = field(
        default_factory=lambda: list(rewards.DEFAULT_REWARD_FUNCS),
        metadata={
            "help": f"Reward functions: names from {rewards.reward_names()}, or path/to/file.py:function. "
            "Weights via --reward_weights."
        },
    )
    smoke: bool = field(default=False, metadata={"help": "Tiny random model on the shipped samples, CPU, offline."})
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir."})
    save_merged: bool = field(default=False, metadata={"help": "Also write a merged 16-bit model to output_dir/merged."})


class ConfigError(ValueError):
    """A configuration problem found before any model loads (one-line message, exit code 2)."""


def fail(message: str) -> None:
    """Print one error line and exit with code 2, as argparse does."""
    print(f"train.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main_process_print(*args: Any) -> None:
    """print() on the main process only (accelerate launch starts several)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        print(*args, flush=True)


# --- configuration: recipe < --smoke < --config file < command line -----------------------------------------


def _spellings(name: str) -> set[str]:
    return {f"--{name}", f"--{name.replace('_', '-')}"}


def _given(cli: list[str], name: str) -> bool:
    """True when the flag `name` is on the command line, in either spelling."""
    return any(arg.split("=", 1)[0] in _spellings(name) for arg in cli)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return config


def _flag_on(cli: list[str], name: str) -> bool:
    """Value of a boolean flag as HfArgumentParser reads it: `--name`, `--name true`, `--name=false`."""
    value = None
    for i, arg in enumerate(cli):
        key, _, inline = arg.partition("=")
        if key in _spellings(name):
            following = cli[i + 1].lower() if i + 1 < len(cli) else ""
            value = inline.lower() if inline else following if following in ("true", "false", "yes", "no", "1", "0") else "true"
    return value in ("true", "yes", "1")


def layered_defaults(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Merge the recipe, --smoke, and the --config file into one dict of defaults; returns it and the flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, cli = pre.parse_known_args(argv)
    config = _read_yaml(RECIPE)
    user = _read_yaml(known.config) if known.config else {}
    config.pop("env", None)
    for key, value in user.pop("env", {}).items():  # trl's convention: env: {VAR: value} in the YAML
        os.environ[key] = str(value)
    if _flag_on(cli, "smoke") or (user.get("smoke") and not _given(cli, "smoke")):
        config.update(SMOKE_OVERRIDES)
    config.update(user)
    return config, cli


def adapt_to_machine(config: dict[str, Any], cli: list[str], backend: str, use_cpu: bool) -> list[str]:
    """Turn off recipe settings this machine cannot run (unless given on the command line); returns notes."""
    notes = []
    on_gpu = cuda_available() and not use_cpu
    if config.get("bf16") and not (on_gpu and bf16_supported()) and not _given(cli, "bf16"):
        config["bf16"] = False
        notes.append("bf16 off: no bf16-capable GPU in use, training in float32")
    if "8bit" in str(config.get("optim", "")) and not (on_gpu and is_installed("bitsandbytes")) and not _given(cli, "optim"):
        notes.append(f"optim {config['optim']} needs bitsandbytes on a GPU: using adamw_torch")
        config["optim"] = "adamw_torch"
    vllm_possible = on_gpu and is_installed("vllm")
    if config.get("use_vllm") and backend == "hf" and not vllm_possible and not _given(cli, "use_vllm"):
        config["use_vllm"] = False
        notes.append("use_vllm off: vLLM needs a CUDA GPU and the vllm package; generating with transformers")
    return notes


def parse_args(argv: list[str]):
    """Parse (ScriptArguments, GRPOConfig, backend, notes), importing unsloth first when it is the backend."""
    config, cli = layered_defaults(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", default=config.get("backend", "auto"))
    requested = pre.parse_known_args(cli)[0].backend
    use_cpu = _flag_on(cli, "use_cpu") if _given(cli, "use_cpu") else bool(config.get("use_cpu"))
    backend, reason = resolve_backend(requested, cpu_only=use_cpu)
    if backend == "unsloth":
        import unsloth  # noqa: F401  -- must come before trl/transformers/peft: it patches them on import
    notes = [f"backend: {backend} ({reason})", *adapt_to_machine(config, cli, backend, use_cpu)]

    from trl import GRPOConfig, TrlParser

    # allow_abbrev=False: argparse would otherwise take a misspelt "--learning_rat" as --learning_rate.
    parser = TrlParser(
        (ScriptArguments, GRPOConfig),
        allow_abbrev=False,
        description="GRPO training on GSM8K. Defaults: recipes/qwen2.5-0.5b-gsm8k-grpo.yaml (the blog's run).",
        epilog="--config FILE.yaml sets any of these options from a YAML file; flags given here override it.",
    )
    unknown = parser.set_defaults_with_config(**config)
    if unknown:
        raise ConfigError(f"unknown option(s) in the config: {' '.join(unknown[::2])}")
    try:
        script_args, training_args = parser.parse_args_into_dataclasses(args=cli)
    except ValueError as error:  # GRPOConfig's own checks (batch sizes, generation counts, ...)
        raise ConfigError(str(error).splitlines()[0]) from error
    return script_args, training_args, backend, notes


# --- checks that need no model ---------------------------------------------------------------------------


def check_config(script_args: ScriptArguments, training_args) -> list:
    """Everything that can be wrong before a model loads (raises ConfigError); returns the reward functions."""
    reward_funcs = rewards.get_reward_funcs(script_args.reward_funcs)  # bad names: ValueError
    if data.is_local_source(script_args.dataset_name) and not Path(script_args.dataset_name).expanduser().exists():
        raise ConfigError(f"dataset {script_args.dataset_name}: no such file or folder")
    smoke_builds_model = script_args.smoke and script_args.model_name_or_path == ScriptArguments.model_name_or_path
    problem = None if smoke_builds_model else find_model(script_args.model_name_or_path)
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


def find_checkpoint(script_args: ScriptArguments, training_args) -> str | None:
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


def save_run_config(script_args: ScriptArguments, training_args, backend: str) -> None:
    """Write the resolved configuration next to the outputs."""
    config = {"backend": backend, "script": asdict(script_args), "training": training_args.to_dict()}
    Path(training_args.output_dir, "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


# --- the run -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, extra_callbacks: list | None = None) -> None:
    """Parse, check, load data and model, train with GRPO, save; `extra_callbacks` join the trainer's (benchmarks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        script_args, training_args, backend, notes = parse_args(argv)
        reward_funcs = check_config(script_args, training_args)
        resume_from = find_checkpoint(script_args, training_args)
    except (ConfigError, BackendError, ValueError) as error:
        fail(str(error))
    for note in notes:
        main_process_print(note)

    # Data (and the tokenizer that measures prompts) before the model: a bad dataset fails in seconds.
    from transformers import AutoTokenizer

    if script_args.smoke and script_args.model_name_or_path == ScriptArguments.model_name_or_path:
        from smoke import build_tiny_model

        script_args.model_name_or_path = str(build_tiny_model(Path(training_args.output_dir).resolve() / "base-model"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    except OSError as error:
        fail(f"cannot load the tokenizer of {script_args.model_name_or_path}: {str(error).splitlines()[0]}")
    try:
        train_dataset = data.get_gsm8k_questions(
            split=script_args.dataset_train_split,
            dataset_name=script_args.dataset_name,
            config=script_args.dataset_config,
            limit=script_args.max_samples,
            seed=training_args.seed,
            max_prompt_tokens=script_args.max_prompt_length,
            tokenizer=tokenizer,
        )
    except data.DatasetError as error:
        fail(str(error))
    main_process_print(
        f"data: {len(train_dataset)} problems from {script_args.dataset_name}; "
        f"rewards: {', '.join(script_args.reward_funcs)}"
    )

    # Model and trainer.
    from trl import GRPOTrainer

    from backends import load_model
    from callbacks import GracefulInterruptCallback, MetricsFileCallback, trim_metrics

    model, tokenizer, peft_config = load_model(backend, script_args, training_args)
    save_run_config(script_args, training_args, backend)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsFileCallback(training_args.output_dir), GracefulInterruptCallback(), *(extra_callbacks or [])],
    )

    # Train: a crash loses at most save_steps of work, Ctrl-C saves first.
    if resume_from:
        trim_metrics(training_args.output_dir, int(Path(resume_from).name.split("-")[-1]))
        main_process_print(f"resuming from {resume_from}")
    trainer.train(resume_from_checkpoint=resume_from)

    # Save: the adapter and tokenizer at the top of output_dir, optionally a merged model.
    trainer.save_model(training_args.output_dir)
    if script_args.save_merged and trainer.accelerator.is_main_process:
        save_merged_model(trainer, tokenizer, backend, Path(training_args.output_dir) / "merged")
    output_dir = training_args.output_dir
    main_process_print(
        f"\ndone: {trainer.state.global_step} steps. adapter + tokenizer in {output_dir}, metrics in "
        f"{output_dir}/metrics.jsonl, config in {output_dir}/run_config.json"
        + (f", merged model in {output_dir}/merged" if script_args.save_merged else "")
        + f"\nnext:  python evaluate.py --checkpoint {output_dir}"
        + (" --smoke" if script_args.smoke else "")
        + f"\n       python plot.py {output_dir}"
    )


def save_merged_model(trainer, tokenizer, backend: str, path: Path) -> None:
    """Write the base weights with the LoRA update folded in, in 16 bit, loadable without peft."""
    import torch

    model = trainer.model
    if backend == "unsloth":
        model.save_pretrained_merged(str(path), tokenizer, save_method="merged_16bit")
        return
    merged = trainer.accelerator.unwrap_model(model).merge_and_unload()
    merged = merged.to(torch.bfloat16)
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)


if __name__ == "__main__":
    main()
