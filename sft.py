"""Cold start: supervised fine-tuning on worked GSM8K solutions in the prompt's format, before GRPO.

DeepSeek-R1 starts reinforcement learning from a model that has seen a small set of answers in the wanted
format; the reference blog skips this by starting from an Instruct model. This script gives any model (for
example the base Qwen2.5-0.5B) that cold start: each GSM8K training solution becomes one assistant answer,
    <reasoning> the worked solution, calculator annotations (<<48/2=24>>) removed </reasoning>
    <validate>  a short re-check built from those annotations </validate>
    <answer>    the gold answer (the text after ####) </answer>
on the same system prompt training and evaluation use, through the model's chat template, with the loss on
the assistant's tokens only (trl's SFTTrainer with prompt-completion data). A .jsonl with its own
`completion` column is used as written.

    # The cold-start recipe (recipes/qwen2.5-0.5b-gsm8k-sft.yaml): Qwen2.5-0.5B base, LoRA, 1000 problems
    python sft.py
    # Then GRPO from the merged result, and the accuracy of each stage
    python train.py --model_name_or_path outputs/Qwen-0.5B-SFT/merged --output_dir outputs/Qwen-0.5B-SFT-GRPO
    python evaluate.py --checkpoint outputs/Qwen-0.5B-SFT          # base vs after SFT
    python evaluate.py --checkpoint outputs/Qwen-0.5B-SFT-GRPO     # after SFT vs after GRPO

    # Full fine-tuning instead of LoRA, your own data, any SFTConfig field (defaults < --config file < flags)
    python sft.py --use_peft false --dataset_name my_answers.jsonl --learning_rate 1e-5
    # Offline CPU check with a tiny random model on the shipped samples, in seconds
    python sft.py --smoke

Output in output_dir: with LoRA the adapter + tokenizer (what evaluate.py --checkpoint scores) and merged/,
the full model with the adapter folded in (what train.py --model_name_or_path starts GRPO from); with
--use_peft false the full model itself. Also checkpoint-N/ every save_steps, run_config.json and
metrics.jsonl. --resume continues the newest checkpoint; Ctrl-C saves one and exits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allocator
import data
import options
import runs
from backends import lora_config
from checks import adapt_to_machine, check_device, find_checkpoint, make_writable_output_dir
from memory_needs import memory_note
from models import find_model
from options import SMOKE_TRAINING, ConfigError, exit_with, read_layers, shared_option

REPO_DIR = Path(__file__).resolve().parent
RECIPE = REPO_DIR / "recipes" / "qwen2.5-0.5b-gsm8k-sft.yaml"
PROG = "sft.py"

# `--smoke`: the same code path at toy size, offline on CPU (the tiny model is built in output_dir).
SMOKE_OVERRIDES: dict[str, Any] = dict(SMOKE_TRAINING, output_dir="outputs/smoke-sft", max_samples=None, logging_steps=1)
# What `--help` lists besides sft.py's own options: the SFTConfig fields a user of this recipe changes.
COMMON_TRAINER_OPTIONS = (
    "output_dir", "seed", "learning_rate", "num_train_epochs", "max_steps", "warmup_steps", "lr_scheduler_type",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps", "save_steps",
    "bf16", "optim", "use_cpu", "report_to", "eos_token",
)


@dataclass
class SFTScriptArguments:
    """What sft.py adds to SFTConfig: model, LoRA, data and run control (the same names as train.py's)."""

    model_name_or_path: str = field(default="Qwen/Qwen2.5-0.5B", metadata={"help": "Hub name or local folder."})
    dataset_name: str = field(
        default="openai/gsm8k",
        metadata={"help": "Hub dataset, or a local .jsonl/.json/.parquet file or folder (question + answer, or completion)."},
    )
    dataset_config: str = shared_option("dataset_config")
    dataset_train_split: str = shared_option("dataset_train_split")
    max_samples: int | None = field(
        default=None, metadata={"help": "Use only this many examples (after shuffling); none: all of them."}
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (false: fine-tune every weight)."})
    lora_r: int = shared_option("lora_r")
    lora_alpha: int = shared_option("lora_alpha")
    lora_target_modules: list[str] = shared_option("lora_target_modules")
    eval_holdout: int = field(
        default=100,
        metadata={
            "help": "Keep out of the cold start the problems train.py holds out with the same --eval_holdout (the "
            "same choice, by question text, whatever the seed), so that its held-out accuracy is on problems "
            "neither stage trained on. At least train.py's value; 0 = keep none out."
        },
    )
    validate_steps: int | None = field(
        default=None,
        metadata={
            "help": "How many of a solution's last calculations the answers' <validate> re-checks; none: all of "
            "them. A list of every step teaches a small model to keep listing steps past the token limit."
        },
    )
    smoke: bool = shared_option("smoke")
    resume: bool = shared_option("resume")


def parse_args(argv: list[str]) -> tuple[SFTScriptArguments, Any, list[str]]:
    """Parse (SFTScriptArguments, SFTConfig, notes): recipe < --smoke < --config file < flags."""
    layers = read_layers(argv, RECIPE, presets={"smoke": SMOKE_OVERRIDES})
    notes = [allocator.note(), *adapt_to_machine(layers, "hf", layers.flag("use_cpu"))]

    from trl import SFTConfig

    description = f"Supervised cold start on GSM8K solutions. Defaults: {RECIPE.relative_to(REPO_DIR)}."
    script_args, training_args = options.parse(
        (SFTScriptArguments, SFTConfig), layers, prog=PROG, description=description, curated=COMMON_TRAINER_OPTIONS
    )
    return script_args, training_args, notes


def check_config(script_args: SFTScriptArguments, training_args: Any) -> None:
    """Everything that can be wrong before a model loads (raises ConfigError)."""
    if data.is_local_source(script_args.dataset_name) and not Path(script_args.dataset_name).expanduser().exists():
        raise ConfigError(f"dataset {script_args.dataset_name}: no such file or folder")
    if not runs.smoke_builds_model(script_args):
        problem = find_model(script_args.model_name_or_path)
        if problem:
            raise ConfigError(f"model '{script_args.model_name_or_path}' not found: {problem}; pass --model_name_or_path")
    if script_args.max_samples is not None and script_args.max_samples < 1:
        raise ConfigError(f"max_samples must be positive, got {script_args.max_samples}")
    if script_args.validate_steps is not None and script_args.validate_steps < 1:
        raise ConfigError(f"validate_steps must be positive (or left out: all steps), got {script_args.validate_steps}")
    if script_args.eval_holdout < 0:
        raise ConfigError(f"eval_holdout must be 0 (none) or a number of problems, got {script_args.eval_holdout}")
    if script_args.use_peft and (script_args.lora_r < 1 or script_args.lora_alpha < 1):
        raise ConfigError("lora_r and lora_alpha must be positive (or --use_peft false)")
    if training_args.max_length is not None and training_args.max_length < 1:
        raise ConfigError(f"max_length must be positive, got {training_args.max_length}")
    make_writable_output_dir(Path(training_args.output_dir))


def load_model(script_args: SFTScriptArguments, training_args: Any) -> tuple[Any, Any]:
    """The model to fine-tune (bf16 where training runs in bf16, else float32) and, with LoRA, its LoraConfig."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(script_args.model_name_or_path, dtype=dtype)
    if not script_args.use_peft:
        return model, None
    return model, lora_config(script_args)


def save_merged(trainer: Any, tokenizer: Any, path: Path) -> None:
    """The full model with the LoRA adapter folded in, and its tokenizer: what train.py starts GRPO from."""
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)


def load_training_data(script_args: SFTScriptArguments, training_args: Any) -> Any:
    """The prompt-completion rows sft.py trains on: the split less train.py's held-out problems, shuffled with
    the seed, cut to max_samples."""
    held = set()
    if script_args.eval_holdout:
        from heldout import heldout_questions

        split = data.load_raw_split(
            script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config, required=("question",)
        )
        held = heldout_questions(split["question"], script_args.eval_holdout)
    return data.get_sft_dataset(
        split=script_args.dataset_train_split,
        dataset_name=script_args.dataset_name,
        config=script_args.dataset_config,
        limit=script_args.max_samples,
        seed=training_args.seed,
        exclude=held,
        validate_steps=script_args.validate_steps,
    )


def main(argv: list[str] | None = None, extra_callbacks: list | None = None) -> None:
    """Parse, check, load data and model, fine-tune, save; exits 130 after a Ctrl-C (a checkpoint is saved).

    `extra_callbacks` join the trainer's (tests, benchmarks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with runs.exit_on_bad_config(PROG):
        script_args, training_args, notes = parse_args(argv)
        check_device(script_args, training_args)
        check_config(script_args, training_args)
        resume_from = find_checkpoint(script_args, training_args)
    if training_args.use_cpu:
        notes.append(memory_note(
            script_args.model_name_or_path, training_args.per_device_train_batch_size, training_args.max_length or 1024,
            training_args.gradient_accumulation_steps, full_tuning=not script_args.use_peft,
            gradient_checkpointing=training_args.gradient_checkpointing,
        ))  # fmt: skip
    for note in filter(None, notes):
        runs.main_process_print(note)

    # Data before the model: a bad dataset fails in seconds.
    tokenizer = runs.load_tokenizer(PROG, script_args, training_args)
    if tokenizer.chat_template is None:
        exit_with(PROG, f"the tokenizer of {script_args.model_name_or_path} has no chat template")
    try:
        train_dataset = load_training_data(script_args, training_args)
    except data.DatasetError as error:
        exit_with(PROG, str(error))
    kept_out = f", less the {script_args.eval_holdout} train.py holds out" if script_args.eval_holdout else ""
    runs.main_process_print(f"data: {len(train_dataset)} examples from {script_args.dataset_name}{kept_out}")

    # Model and trainer.
    from trl import SFTTrainer

    from callbacks import GracefulInterruptCallback, MetricsFileCallback

    model, peft_config = load_model(script_args, training_args)
    interrupt = GracefulInterruptCallback()
    callbacks = [MetricsFileCallback(training_args.output_dir, interrupt), interrupt, *(extra_callbacks or [])]
    trainer = runs.make_trainer(
        SFTTrainer, script_args, training_args, "hf", model, tokenizer, peft_config, callbacks, train_dataset=train_dataset
    )

    from shared_prompt import train_reading_prompts_once

    train_reading_prompts_once(trainer.model)  # the system prompt every answer follows runs through the model once

    # Train: a crash loses at most save_steps of work, Ctrl-C saves first.
    if resume_from:
        runs.resume_metrics(training_args.output_dir, resume_from)
    runs.train_until_stopped(trainer, resume_from, interrupt, argv, prog=PROG)
    output_dir = training_args.output_dir

    # Save what evaluate.py scores and what train.py starts GRPO from; a Ctrl-C here says what is written.
    what = "adapter" if script_args.use_peft else "model"
    doing, written = f"saving the {what} to {output_dir}", []
    start_from = str(Path(output_dir) / "merged") if script_args.use_peft else output_dir
    try:
        trainer.save_model(output_dir)
        written.append(f"the {what} + tokenizer are in {output_dir}")
        if script_args.use_peft and trainer.accelerator.is_main_process:
            doing = f"writing the merged model to {start_from}"
            save_merged(trainer, tokenizer, Path(start_from))
    except KeyboardInterrupt:
        runs.stop_after_training(argv, training_args, trainer.state.global_step, doing, written, prog=PROG)
    smoke = " --smoke" if script_args.smoke else ""
    runs.main_process_print(
        f"\ndone: {trainer.state.global_step} steps. "
        + (f"adapter + tokenizer in {output_dir}, merged model in {start_from}" if script_args.use_peft
           else f"model + tokenizer in {output_dir}")  # fmt: skip
        + f", metrics in {output_dir}/metrics.jsonl"
        + f"\nnext:  python evaluate.py --checkpoint {output_dir}{smoke}"
        + f"\n       python train.py --model_name_or_path {start_from}{smoke}"
    )


if __name__ == "__main__":
    runs.run_script("sft.py", main)
