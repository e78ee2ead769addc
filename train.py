"""GRPO training of a small reasoning model on GSM8K: the reference blog's run, one command.

    # The blog's run on one CUDA GPU (Unsloth + vLLM; recipes/qwen2.5-0.5b-gsm8k-grpo.yaml holds the values)
    python train.py

    # Any GRPOConfig field from the command line or a YAML file (defaults < --config file < flags)
    python train.py --config my_run.yaml --learning_rate 1e-5 --num_generations 4 --per_device_train_batch_size 4

    # Offline CPU check of the whole pipeline with a tiny random model, in under a minute
    python train.py --smoke

    # Continue the newest checkpoint in output_dir; write a merged 16-bit model at the end
    python train.py --resume --save_merged

    # Several GPUs: data-parallel, or DeepSpeed via an accelerate config
    accelerate launch --num_processes 2 train.py --backend hf
    # Or generation on a vLLM server (one GPU) and training on the others:
    #   CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
    #   CUDA_VISIBLE_DEVICES=1,2 accelerate launch --num_processes 2 train.py --backend hf --vllm_mode server
    # Two processes on the CPU (`accelerate launch --cpu` would start only one)
    torchrun --nproc_per_node 2 train.py --smoke

Without a CUDA GPU the real run is refused (one line says why) unless --use_cpu or --smoke is given.
Output in output_dir: checkpoint-N/ every save_steps, then the LoRA adapter + tokenizer (loadable by
evaluate.py and plain peft), run_config.json (the resolved configuration), metrics.jsonl (every log entry,
written as training goes), completions/ (each logged step's completions) and, with --save_merged, merged/
(a full 16-bit model). Ctrl-C saves a checkpoint and exits with code 130; --resume continues it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allocator
import data
import options
import rewards
from attention import GQA_SDPA
from backends import BACKENDS, BackendError, choose_training_backend
from checks import (
    adapt_to_machine,
    check_config,
    check_device,
    check_save_merged,
    check_steps,
    check_unsloth_settings,
    check_vllm_generation,
    find_checkpoint,
)
from heldout import evaluation_without_loss, hold_out, with_scorers
from memory_needs import memory_note
from options import SMOKE_TRAINING, ConfigError, exit_with, read_layers, shared_option
from runs import (
    exit_on_bad_config,
    is_main_process,
    load_tokenizer,
    main_process_print,
    make_trainer,
    resume_metrics,
    run_script,
    smoke_builds_model,
    stop_after_training,
    train_until_stopped,
)

REPO_DIR = Path(__file__).resolve().parent
RECIPE = REPO_DIR / "recipes" / "qwen2.5-0.5b-gsm8k-grpo.yaml"
PROG = "train.py"

# `--smoke`: the same code path at toy size, offline on CPU (the tiny model is built in output_dir).
SMOKE_OVERRIDES: dict[str, Any] = dict(
    SMOKE_TRAINING,
    output_dir="outputs/smoke",
    max_completion_length=32,
    max_prompt_length=512,  # the tiny tokenizer spends more tokens on the system prompt than Qwen's
    use_vllm=False,
    per_device_eval_batch_size=2,  # 2 batches on one process, 1 on each of 2
    eval_steps=2,
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
    lora_r: int = shared_option("lora_r")
    lora_alpha: int = shared_option("lora_alpha")
    lora_target_modules: list[str] = shared_option("lora_target_modules")
    fast_inference: bool = field(
        default=True,
        metadata={
            "help": "unsloth backend: generate with Unsloth's in-process vLLM engine (true), or with Unsloth's own "
            "generate (false: no vllm needed, slower). Off by itself when vllm is not installed."
        },
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
    dataset_config: str = shared_option("dataset_config")
    dataset_train_split: str = shared_option("dataset_train_split")
    max_samples: int | None = field(default=None, metadata={"help": "Use only this many problems (after shuffling)."})
    max_prompt_length: int = field(default=256, metadata={"help": "Drop prompts longer than this many tokens."})
    reward_funcs: list[str] = field(
        default_factory=lambda: list(rewards.DEFAULT_REWARD_FUNCS),
        metadata={
            "help": f"Reward functions: names from {rewards.reward_names()}, or path/to/file.py:function. "
            "Weights via --reward_weights."
        },
    )
    smoke: bool = shared_option("smoke")
    resume: bool = shared_option("resume")
    save_merged: bool = field(default=False, metadata={"help": "Also write a merged 16-bit model to output_dir/merged."})
    eval_holdout: int = field(
        default=100,
        metadata={
            "help": "Training problems kept out of training and scored every eval_steps with evaluate.py's scorer "
            "(metrics eval/strict, ...); chosen by question text, so sft.py --eval_holdout keeps the same ones out "
            "of the cold start. 0 = no held-out evaluation."
        },
    )
    generate_merged: bool = field(
        default=True,
        metadata={
            "help": "hf backend without vLLM: generate (rollouts, held-out answers) with the LoRA adapter folded into "
            "new weights for the call, the original weights back after it (lora_merge.py): the same policy with "
            "fewer matmuls per token. false: trl's generate through the unmerged adapter."
        },
    )
    print_sample_every: int = field(
        default=10,
        metadata={
            "help": "Print one question and a few of its completions (num_completions_to_print) every N logging "
            "steps and at the first, 0: never. Every logged step's completions go to output_dir/completions/."
        },
    )


def clear_smoke_folder(script_args: ScriptArguments, training_args) -> None:
    """--smoke in its own folder (outputs/smoke) is a throwaway check: each one starts that folder afresh."""
    own_folder = Path(training_args.output_dir) == Path(SMOKE_OVERRIDES["output_dir"])
    if not script_args.smoke or not own_folder or script_args.resume or training_args.resume_from_checkpoint:
        return
    with training_args.main_process_first(desc="a fresh smoke folder"):
        if int(os.environ.get("LOCAL_RANK", "0")) == 0 and Path(training_args.output_dir).exists():
            shutil.rmtree(training_args.output_dir)


def fail(message: str) -> None:
    """Print one error line and exit with code 2, as argparse does."""
    exit_with(PROG, message)


# --- configuration: recipe < --smoke < --config file < command line -----------------------------------------

# What `--help` lists besides train.py's own options: the GRPOConfig fields a user of this recipe changes.
COMMON_TRAINER_OPTIONS = (
    "output_dir", "seed", "learning_rate", "num_train_epochs", "max_steps", "warmup_steps", "lr_scheduler_type",
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "max_completion_length",
    "temperature", "beta", "loss_type", "reward_weights", "logging_steps", "save_steps", "eval_steps", "bf16",
    "optim", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "use_cpu", "report_to", "log_completions",
)


def parse_args(argv: list[str]):
    """Parse (ScriptArguments, GRPOConfig, backend, notes), importing unsloth first when it is the backend."""
    layers = read_layers(argv, RECIPE, presets={"smoke": SMOKE_OVERRIDES})
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", default=layers.config.get("backend", "auto"))
    requested = pre.parse_known_args(layers.cli)[0].backend
    use_cpu = layers.flag("use_cpu")
    try:
        backend, reason = choose_training_backend(requested, cpu_only=use_cpu)
    except BackendError as error:
        source = layers.where("backend")
        raise BackendError(str(error) if source.endswith("command line") else f"{error} (backend from {source})") from None
    if backend == "unsloth":
        try:
            import unsloth  # noqa: F401  -- must come before trl/transformers/peft: it patches them on import
        except Exception as error:  # noqa: BLE001 -- a broken install fails in many ways (ImportError, OSError, ...)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            message = f"backend unsloth ({reason}): import unsloth failed: {first}; --backend hf trains without it"
            raise BackendError(message) from None
    notes = [f"backend: {backend} ({reason})", allocator.note(), *adapt_to_machine(layers, backend, use_cpu)]

    from trl import GRPOConfig

    description = f"GRPO training on GSM8K. Defaults: {RECIPE.relative_to(REPO_DIR)} (the blog's run)."
    script_args, training_args = options.parse(
        (ScriptArguments, GRPOConfig), layers, prog=PROG, description=description, curated=COMMON_TRAINER_OPTIONS
    )
    check_unsloth_settings(layers, backend, script_args.fast_inference, training_args)
    check_vllm_generation(layers, backend, training_args)
    return script_args, training_args, backend, notes


# --- the run -----------------------------------------------------------------------------------------------


def load_data(script_args: ScriptArguments, training_args, tokenizer) -> tuple[Any, Any, str | None]:
    """(training problems, held-out problems or None, a console note or None); DatasetError or ValueError."""
    train_dataset = data.get_gsm8k_questions(
        split=script_args.dataset_train_split,
        dataset_name=script_args.dataset_name,
        config=script_args.dataset_config,
        limit=None if script_args.eval_holdout else script_args.max_samples,  # held-out problems come first
        seed=training_args.seed,
        max_prompt_tokens=script_args.max_prompt_length,
        tokenizer=tokenizer,
    )
    if not script_args.eval_holdout:
        return train_dataset, None, None
    # Chosen among the split as stored, as sft.py chooses: a prompt dropped above cannot shift the choice.
    split = data.load_raw_split(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    return hold_out(
        train_dataset, script_args.eval_holdout, training_args, script_args.max_samples, split_questions=split["question"]
    )


def main(argv: list[str] | None = None, extra_callbacks: list | None = None) -> None:
    """Parse, check, load data and model, train with GRPO, save; `extra_callbacks` join the trainer's (benchmarks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with exit_on_bad_config(PROG):
        script_args, training_args, backend, notes = parse_args(argv)
        check_device(script_args, training_args)  # first: the hub lookups of the model check can take a while
        check_save_merged(script_args, backend)
        clear_smoke_folder(script_args, training_args)
        reward_funcs = check_config(script_args, training_args, builds_model=smoke_builds_model(script_args))
        resume_from = find_checkpoint(script_args, training_args)
    if training_args.use_cpu:
        notes.append(memory_note(
            script_args.model_name_or_path, training_args.per_device_train_batch_size,
            script_args.max_prompt_length + training_args.max_completion_length, training_args.gradient_accumulation_steps,
            gradient_checkpointing=training_args.gradient_checkpointing,
        ))  # fmt: skip
    for note in filter(None, notes):
        main_process_print(note)

    # Data (and the tokenizer that measures prompts) before the model: a bad dataset fails in seconds.
    tokenizer = load_tokenizer(PROG, script_args, training_args)
    try:
        train_dataset, heldout, note = load_data(script_args, training_args, tokenizer)
    except (data.DatasetError, ValueError) as error:
        fail(str(error))
    if heldout is not None:
        reward_funcs, training_args.reward_weights = with_scorers(reward_funcs, training_args.reward_weights)
        main_process_print(note)
        if is_main_process():
            heldout.select_columns(["question", "answer"]).to_json(Path(training_args.output_dir) / "heldout.jsonl")
    try:
        steps = check_steps(len(train_dataset), script_args, training_args)
    except ConfigError as error:
        fail(str(error))
    main_process_print(
        f"data: {len(train_dataset)} problems from {script_args.dataset_name}; "
        f"rewards: {', '.join(script_args.reward_funcs)}; {steps} optimizer steps"
    )

    # Model and trainer.
    from trl import GRPOTrainer

    from backends import load_model
    from callbacks import (
        CompletionsCallback,
        GracefulInterruptCallback,
        HeldOutAccuracyCallback,
        MetricsFileCallback,
        StepTimeCallback,
        last_heldout_step,
    )

    model, tokenizer, peft_config = load_model(backend, script_args, training_args)
    interrupt = GracefulInterruptCallback()
    eval_temperature = training_args.temperature if heldout is not None else None
    step_time = StepTimeCallback()
    reward_funcs = step_time.timed_rewards(reward_funcs)
    callbacks = [step_time, MetricsFileCallback(training_args.output_dir, interrupt, eval_temperature), interrupt]
    heldout_progress = None
    if resume_from:
        resume_step = resume_metrics(training_args.output_dir, resume_from)
    if heldout is not None:
        evaluated = last_heldout_step(training_args.output_dir, resume_step) if resume_from else None
        if resume_from and evaluated == resume_step:
            training_args.eval_on_start = False  # that step's held-out evaluation is in metrics.jsonl already
        heldout_progress = HeldOutAccuracyCallback(len(heldout), training_args.temperature, evaluated)
    callbacks += [*([heldout_progress] if heldout_progress else []), *(extra_callbacks or [])]
    trainer = make_trainer(
        GRPOTrainer, script_args, training_args, backend, model, tokenizer, peft_config, callbacks,
        reward_funcs=reward_funcs, train_dataset=train_dataset, eval_dataset=heldout,
    )  # fmt: skip
    if heldout is not None:
        evaluation_without_loss(trainer)
    sharded = training_args.deepspeed or training_args.fsdp  # a shard of each weight per process: nothing to fold into
    if backend == "hf" and not sharded:
        from shared_prompt import train_reading_prompts_once

        if train_reading_prompts_once(trainer.model):
            main_process_print("loss: each group's prompt runs through the model once, its completions from its cache")
    if backend == "hf" and not training_args.use_vllm and not sharded:
        from shared_prompt import generate_reading_prompts_once

        filler = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id  # masked
        generate_reading_prompts_once(trainer.model, filler)  # wrapped by the merge below: the same weights
        main_process_print("generation: the shared system prompt and each distinct prompt run through the model once")
    if script_args.generate_merged and backend == "hf" and not training_args.use_vllm and not sharded:
        from cpu_decode import can_pack
        from lora_merge import generate_merged

        if generate_merged(trainer.model):
            main_process_print("generation: the LoRA adapter folded into the weights for each generate call")
            if can_pack(trainer.model):
                main_process_print("generation: weights packed for oneDNN, sampling by cumulative sums (cpu_decode.py)")
    trainer.add_callback(
        CompletionsCallback(
            trainer, training_args.output_dir, script_args.print_sample_every, training_args.num_completions_to_print
        )
    )

    # Train: a crash loses at most save_steps of work, Ctrl-C saves first.
    train_until_stopped(trainer, resume_from, interrupt, argv, prog=PROG)
    output_dir = training_args.output_dir

    # Evaluate and save; a Ctrl-C from here on says what is written and how to finish.
    doing, written = "the final held-out evaluation", []
    try:
        if heldout_progress is not None and heldout_progress.last_step != trainer.state.global_step:
            trainer.evaluate()  # the curve ends where training does
        doing = f"saving the adapter to {output_dir}"
        trainer.save_model(output_dir)  # the adapter and tokenizer at the top of output_dir
        written.append(f"the adapter + tokenizer are in {output_dir}")
        if script_args.save_merged and trainer.accelerator.is_main_process:
            doing = f"writing the merged model to {output_dir}/merged"
            save_merged_model(trainer, tokenizer, backend, Path(output_dir) / "merged")
    except KeyboardInterrupt:
        stop_after_training(argv, training_args, trainer.state.global_step, doing, written)
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
    run_script("train.py", main)
