"""Real-size speed and memory of evaluation and GRPO training, with no real weights: a random Qwen2.5-0.5B.

    # On a CUDA machine, from the repo root, with ../shared/tokenizers/qwen2.5 and ../shared/data/gsm8k beside
    # it (a few minutes: 5 batch sizes x 2 generate calls of 512 tokens, then 3 GRPO steps of 64 completions)
    python bench/gpu_bench.py --output_json gpu_bench.json
    # without ../shared: name the Qwen2.5 tokenizer folder and a GSM8K copy (a folder with train/test .jsonl)
    python bench/gpu_bench.py --tokenizer path/to/qwen2.5 --dataset_name path/to/gsm8k --output_json gpu_bench.json
    # a GPU missing from KNOWN_GPUS: give its memory bandwidth (GB/s) and dense bf16 TFLOPS
    python bench/gpu_bench.py --bandwidth_gbs 864 --tflops 362

    # CPU: the same code at toy sizes (tiny model, short completions), as tests/test_gpu_bench.py runs it
    python bench/gpu_bench.py --toy --tokenizer tiny --num_prompts 4 --batch_sizes 1 2 --max_new_tokens 8 --train_steps 1

A random-weight model with Qwen2.5-0.5B-Instruct's exact shape (smoke.QWEN25_05B_SHAPE: hidden 896, 24 layers,
14 heads, 2 KV heads, vocab 151936, tied embeddings) costs the same per token as the real one. Random weights
rarely stop early, so every completion runs to the token limit: the figures are a worst case.

What it measures, with the project's own code paths:
1. evaluation: generation.generate_with_model, evaluate.py's batched greedy transformers path, on GSM8K test
   prompts at several batch sizes: generated tokens/s, peak GPU memory, wall time, and the worst-case time for
   all 1319 test problems;
2. training: train.main([...]) in-process, `--backend hf --use_vllm false` with the recipe's settings (LoRA r=32
   on all projections, 2 generations, 512 completion tokens, 32 prompts per optimizer step): seconds per
   optimizer step (wall time between the trainer's step callbacks), split into generation (trl's
   GRPOTrainer._generate_single_turn, timed by a patch here) and the rest; peak GPU memory. The first step is
   warm-up and left out of the means when there are more;
3. the hardware limit of each figure. Decoding reads every weight and the KV cache once per step, so
   tokens/s <= batch x bandwidth / (parameter bytes + KV bytes), KV bytes = 2 (K, V) x layers x KV heads x
   head_dim x dtype bytes x context x batch, at the average context (padded prompt + half the completion).
   Training's rest (forward and backward) is held against the GPU's dense bf16 peak instead;
4. one epoch of GSM8K train (7473 prompts / 32 per step = 233 steps) at the measured seconds per step, and a
   projection to a 24 GB RTX 3090 (936 GB/s, 71 bf16 TFLOPS): the hardware-bound share of each part (its
   limit time) is scaled by the bandwidth (generation) or TFLOPS (rest) ratio, the time above the limit
   (launch and Python overheads) is kept as measured. That is a projection, not a measurement, and printed so.
Bandwidth and TFLOPS come from a table of known GPUs (KNOWN_GPUS) or --bandwidth_gbs / --tflops; the table
and the arithmetic above live in bench/hardware.py. The figures go to stdout (the last line is the headline)
and, with --output_json, to a JSON file; progress bars and train.py's own log go to stderr.

The GPU machine needs trl, datasets and nltk besides torch, transformers, peft and accelerate. A CUDA image
with the usual data stack (pyarrow, pandas, requests, regex, pyyaml, xxhash, ...) needs only these wheels, a
few MB (match --python-version to its Python; no dependencies resolved, so no CUDA torch is pulled):

    pip download --no-deps --only-binary=:all: --python-version 3.12 -d wheels \\
        trl==1.16.0 datasets==4.8.5 nltk==3.10.4 dill==0.4.1 multiprocess==0.70.19
    # on the GPU machine:
    pip install --no-index --no-deps wheels/*.whl

On a bare Python, add their dependencies (pyarrow, pandas, requests, aiohttp, regex, xxhash, ... : the
Requires-Dist of these wheels). trl 1.15.0 (requirements.txt's pin) works as well on a GPU (its fused LM head
needs Triton, which is there): put trl==1.15.0 in place of trl==1.16.0. Both have
GRPOTrainer._generate_single_turn, which this file times. bitsandbytes is not needed: train.py uses adamw_torch
where paged_adamw_8bit cannot run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as `python bench/gpu_bench.py` from anywhere: the repo's modules live one folder up.
REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from hardware import (
    GB,
    GSM8K_TEST_PROMPTS,
    GSM8K_TRAIN_PROMPTS,
    TARGET,
    TARGET_MEMORY,
    decode_limit_seconds,
    epoch_steps,
    find_gpu,
    format_bytes,
    format_duration,
    kv_bytes_per_token,
    percent,
    project_seconds,
    training_flops,
)
from hardware import KNOWN_GPUS, GpuSpec, decode_limit_tokens_per_s  # noqa: F401  (still importable from here)
from smoke import QWEN25_05B_SHAPE, SAMPLE_DATA_DIR, TINY_SHAPE

SHARED_DIR = REPO_DIR.parent / "shared"
DEFAULT_TOKENIZER = SHARED_DIR / "tokenizers" / "qwen2.5"
DEFAULT_DATASET = SHARED_DIR / "data" / "gsm8k"

GPU_BATCH_SIZES = [1, 8, 16, 32, 64]  # 16: evaluate.py's default on CUDA; 64: one GRPO step's completions
TOY_BATCH_SIZES = [1, 2]
GPU_MAX_NEW_TOKENS = 512  # the recipe's max_completion_length and evaluate.py's default
TOY_MAX_NEW_TOKENS = 16
TOY_GRADIENT_ACCUMULATION = 2  # 2 prompts x 2 completions per toy step (the recipe: 32 prompts)
TINY_TOKENIZER = "tiny"  # --tokenizer value for smoke.build_tiny_tokenizer()
# The generation path every training figure describes: not the blog's Unsloth + vLLM one.
TRAIN_PATH = "train.py --backend hf --use_vllm false: trl's transformers generate() with attention.py's attention"


@dataclass
class BenchArguments:
    """Flags of gpu_bench.py (HfArgumentParser: `--max_new_tokens` and `--max-new-tokens` both work)."""

    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": f"Qwen2.5 tokenizer folder, or '{TINY_TOKENIZER}' (smoke's, --toy only). Default: "
            f"{DEFAULT_TOKENIZER} if present, else {TINY_TOKENIZER} on toy runs."
        },
    )
    toy: bool = field(
        default=False,
        metadata={"help": "Toy sizes on a GPU too (tiny model, short completions). Always on without a GPU."},
    )
    num_prompts: int | None = field(
        default=None,
        metadata={"help": "GSM8K test prompts per batch size (repeated if the data has fewer). Default: 2 x batch."},
    )
    batch_sizes: list[int] | None = field(
        default=None, metadata={"help": f"Evaluation batch sizes. Default: {GPU_BATCH_SIZES}, toy {TOY_BATCH_SIZES}."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"Completion tokens, eval and training. Default: {GPU_MAX_NEW_TOKENS}, toy {TOY_MAX_NEW_TOKENS}."
        },
    )
    train_steps: int = field(default=3, metadata={"help": "Optimizer steps to time (the first is warm-up)."})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"GSM8K-format data (see data.py). Default: {DEFAULT_DATASET} if present, else {SAMPLE_DATA_DIR}."
        },
    )
    skip_train: bool = field(default=False, metadata={"help": "Skip the training measurement."})
    skip_eval: bool = field(default=False, metadata={"help": "Skip the evaluation measurement."})
    output_json: str | None = field(default=None, metadata={"help": "Also write every figure to this JSON file."})
    bandwidth_gbs: float | None = field(
        default=None,
        metadata={"help": "Memory bandwidth of this device in GB/s. Default: from KNOWN_GPUS (none on CPU)."},
    )
    tflops: float | None = field(
        default=None, metadata={"help": "Dense bf16 TFLOPS of this device. Default: from KNOWN_GPUS (none on CPU)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})


# ---------------------------------------------------------------------------------------------------------
# The device


def synchronize() -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, int | None]:
    """Peak GPU memory since the last reset: allocated by tensors, and reserved by torch's allocator."""
    import torch

    if not torch.cuda.is_available():
        return {"peak_memory_bytes": None, "peak_reserved_bytes": None}
    return {
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
    }


def describe_device(args: BenchArguments) -> dict[str, Any]:
    """Device name, and its bandwidth / bf16 peak from the flags or KNOWN_GPUS."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        known = find_gpu(name)
    else:
        name, known = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)", None
    bandwidth = args.bandwidth_gbs * GB if args.bandwidth_gbs else known.bandwidth if known else None
    flops = args.tflops * 1e12 if args.tflops else known.bf16_flops if known else None
    source = "flags" if args.bandwidth_gbs or args.tflops else f"table: {known.name}" if known else None
    return {
        "name": name,
        "cuda": torch.cuda.is_available(),
        "bandwidth": bandwidth,
        "bf16_flops": flops,
        "limits_from": source,
    }


# ---------------------------------------------------------------------------------------------------------
# Model and data


def resolve_args(args: BenchArguments, cuda: bool) -> BenchArguments:
    """Fill the defaults that depend on the device; a GPU run without a tokenizer is an error (exit code 2)."""
    args.toy = args.toy or not cuda  # Qwen2.5-0.5B's size with 512-token answers would take hours on a CPU
    args.batch_sizes = args.batch_sizes or (TOY_BATCH_SIZES if args.toy else GPU_BATCH_SIZES)
    args.max_new_tokens = args.max_new_tokens or (TOY_MAX_NEW_TOKENS if args.toy else GPU_MAX_NEW_TOKENS)
    if args.tokenizer is None:
        args.tokenizer = str(DEFAULT_TOKENIZER) if DEFAULT_TOKENIZER.is_dir() else TINY_TOKENIZER
    if args.tokenizer == TINY_TOKENIZER and not args.toy:
        fail(f"no Qwen2.5 tokenizer: pass --tokenizer with its folder ({DEFAULT_TOKENIZER} is missing)")
    if args.tokenizer != TINY_TOKENIZER and not Path(args.tokenizer).is_dir():
        fail(f"--tokenizer {args.tokenizer}: no such folder")
    if args.dataset_name is None:
        args.dataset_name = str(DEFAULT_DATASET if DEFAULT_DATASET.is_dir() else SAMPLE_DATA_DIR)
    if min(args.batch_sizes) < 1 or args.max_new_tokens < 1 or args.train_steps < 1 or (args.num_prompts or 1) < 1:
        fail("--batch_sizes, --max_new_tokens, --train_steps and --num_prompts must be positive")
    return args


def build_model(args: BenchArguments, device: str, folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The random model (Qwen2.5-0.5B's shape, or tiny) and its tokenizer, saved to `folder` for train.py."""
    import torch

    from attention import register
    from generation import load_tokenizer
    from smoke import build_qwen2_model, build_tiny_tokenizer

    if args.tokenizer == TINY_TOKENIZER:
        tokenizer = build_tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU
        model = build_qwen2_model(tokenizer, QWEN25_05B_SHAPE if not args.toy else TINY_SHAPE, args.seed, dtype)
    model.set_attn_implementation(register())  # what generation.load_hf_model and backends.load_hf load with
    with contextlib.redirect_stdout(sys.stderr):  # transformers' "Writing model shards" bar
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once, as they are read once
    dtype_bytes = torch.finfo(dtype).bits // 8
    info = {
        "shape": "toy (smoke.TINY_SHAPE)" if args.toy else "Qwen2.5-0.5B-Instruct (smoke.QWEN25_05B_SHAPE)",
        "parameters": params,
        "param_bytes": params * dtype_bytes,
        "dtype": str(dtype).removeprefix("torch."),
        "layers": config.num_hidden_layers,
        "kv_heads": config.num_key_value_heads,
        "head_dim": head_dim,
        "vocab_size": config.vocab_size,
        "kv_bytes_per_token": kv_bytes_per_token(
            config.num_hidden_layers, config.num_key_value_heads, head_dim, dtype_bytes
        ),
        "tokenizer": "smoke.build_tiny_tokenizer()" if args.tokenizer == TINY_TOKENIZER else args.tokenizer,
        "attention": model.config._attn_implementation,
    }
    return model.eval(), load_tokenizer(str(folder)), info


def eval_prompts(dataset_name: str, count: int) -> list:
    """`count` chat prompts from the test split, repeated when it has fewer."""
    from data import get_gsm8k_questions

    prompts = list(get_gsm8k_questions(split="test", dataset_name=dataset_name, limit=count)["prompt"])
    return [prompts[i % len(prompts)] for i in range(count)]


# ---------------------------------------------------------------------------------------------------------
# Evaluation: evaluate.py's transformers path, timed per batch size


@contextmanager
def recorded_generate(model: Any) -> Iterator[list[dict[str, Any]]]:
    """Record the shape and time of every model.generate call: batch, padded prompt length, decoding steps."""
    calls: list[dict[str, Any]] = []
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        synchronize()
        start = time.perf_counter()
        output = original(*args, **kwargs)
        synchronize()
        prompt_len = kwargs["input_ids"].shape[1]
        calls.append(
            {
                "batch": output.shape[0],
                "prompt_len": prompt_len,
                "steps": output.shape[1] - prompt_len,
                "seconds": time.perf_counter() - start,
            }
        )
        return output

    model.generate = generate
    try:
        yield calls
    finally:
        del model.generate  # the class's own method again


def run_eval(
    model: Any, tokenizer: Any, args: BenchArguments, device: dict[str, Any], info: dict[str, Any]
) -> list[dict[str, Any]]:
    """Greedy generation at each batch size; one row of figures per batch size."""
    from generation import generate_with_model

    from roofline import decode_batch_size, measure_limits

    rows = []
    # evaluate.py's own default batch on this device joins the list (full runs; toy runs keep theirs).
    chosen = decode_batch_size(model, measure_limits(model.device, model.dtype), context=512 + args.max_new_tokens)
    batches = args.batch_sizes + ([chosen] if not args.toy and chosen not in args.batch_sizes else [])
    pool = eval_prompts(args.dataset_name, args.num_prompts or 2 * max(batches))
    for batch in batches:
        prompts = pool[: args.num_prompts or 2 * batch]
        prompts += [pool[i % len(pool)] for i in range(len(prompts), batch)]  # at least one full batch
        # Warm-up (kernels, allocator) at this batch size, not timed.
        generate_with_model(model, tokenizer, prompts[:batch], min(4, args.max_new_tokens), batch, label="warm-up")
        reset_peak_memory()
        with recorded_generate(model) as calls:
            synchronize()
            start = time.perf_counter()
            completions = generate_with_model(
                model, tokenizer, prompts, args.max_new_tokens, batch, label=f"batch {batch}"
            )
            synchronize()
            wall = time.perf_counter() - start
        tokens = sum(c.num_tokens for c in completions)
        row = {
            "batch_size": batch,
            "evaluate_default": batch == chosen,
            "prompts": len(prompts),
            "generated_tokens": tokens,
            "cut_off_share": sum(c.cut_off for c in completions) / len(completions),
            "mean_padded_prompt_tokens": sum(c["prompt_len"] * c["batch"] for c in calls) / len(prompts),
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "test_set_s": GSM8K_TEST_PROMPTS * wall / len(prompts),  # worst case: every answer to the limit
            **peak_memory(),
            "limit_tokens_per_s": None,
            "percent_of_limit": None,
        }
        if device["bandwidth"]:
            limit_s = sum(
                decode_limit_seconds(
                    c["batch"],
                    c["prompt_len"],
                    c["steps"],
                    device["bandwidth"],
                    info["param_bytes"],
                    info["kv_bytes_per_token"],
                )
                for c in calls
            )
            row["limit_tokens_per_s"] = sum(c["batch"] * c["steps"] for c in calls) / limit_s
            row["percent_of_limit"] = 100 * row["tokens_per_s"] / row["limit_tokens_per_s"]
        rows.append(row)
    return rows


def print_eval(rows: list[dict[str, Any]], args: BenchArguments) -> None:
    print(
        f"\neval (measured): generation.generate_with_model, evaluate.py's greedy transformers path (attention.py's "
        f"grouped-query SDPA, the system prompt's KV cache shared), GSM8K test prompts, max_new_tokens "
        f"{args.max_new_tokens}; peak = torch.cuda.max_memory_allocated; * = evaluate.py's default batch here"
    )
    print(
        f"{'batch':>5} {'prompts':>7} {'tokens':>7} {'wall':>9} {'tokens/s':>10} {'limit tok/s':>11} {'of limit':>8} {'peak mem':>9} {'1319 test prompts':>18}"
    )
    for r in rows:
        limit = f"{r['limit_tokens_per_s']:.0f}" if r["limit_tokens_per_s"] else "n/a"
        peak = f"{r['peak_memory_bytes'] / GB:.2f} GB" if r["peak_memory_bytes"] is not None else "n/a"
        print(
            f"{r['batch_size']:>4}{'*' if r['evaluate_default'] else ' '} {r['prompts']:>7} {r['generated_tokens']:>7} {r['wall_s']:>8.2f}s "
            f"{r['tokens_per_s']:>10.1f} {limit:>11} {percent(r['tokens_per_s'], r['limit_tokens_per_s']):>8} "
            f"{peak:>9} {format_duration(r['test_set_s']):>18}"
        )
    print(
        "limit = batch x bandwidth / (weights + KV cache at the average context) per decoding step; the 1319-prompt "
        "time is a worst case (random weights: every completion runs to max_new_tokens)"
    )


# ---------------------------------------------------------------------------------------------------------
# Training: train.py's own run, with its generation and its steps timed


@contextmanager
def timed_trl_generation() -> Iterator[list[dict[str, Any]]]:
    """Time every GRPOTrainer._generate_single_turn call (all of a step's completions, one generate), per step."""
    from trl.trainer import grpo_trainer

    calls: list[dict[str, Any]] = []
    original = grpo_trainer.GRPOTrainer._generate_single_turn

    def generate_single_turn(self: Any, prompt_ids: list, *args: Any, **kwargs: Any) -> Any:
        synchronize()
        start = time.perf_counter()
        completion_ids, logprobs = original(self, prompt_ids, *args, **kwargs)
        synchronize()
        calls.append(
            {
                "step": self.state.global_step + 1,  # the optimizer step this generation feeds
                "seconds": time.perf_counter() - start,
                "batch": len(completion_ids),
                "prompt_len": max(len(p) for p in prompt_ids),  # left-padded to the longest
                "steps": max(len(c) for c in completion_ids),
                "completion_tokens": sum(len(c) for c in completion_ids),
                "tokens": sum(len(p) for p in prompt_ids) + sum(len(c) for c in completion_ids),
            }
        )
        return completion_ids, logprobs

    grpo_trainer.GRPOTrainer._generate_single_turn = generate_single_turn
    try:
        yield calls
    finally:
        grpo_trainer.GRPOTrainer._generate_single_turn = original


def step_timer() -> Any:
    """A TrainerCallback that records the wall time of every optimizer step (its micro-batches and update)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def train_argv(args: BenchArguments, model_dir: Path, output_dir: Path, prompts_per_step: int) -> list[str]:
    """train.py's flags: the recipe's settings, with the random model, no vLLM and no checkpoints."""
    argv = [
        "--backend", "hf",
        "--model_name_or_path", str(model_dir),
        "--dataset_name", args.dataset_name,
        "--output_dir", str(output_dir),
        "--use_vllm", "false",  # the hf backend's own generate: there is no vLLM on the GPU box
        "--max_steps", str(args.train_steps),
        "--max_samples", str(prompts_per_step * args.train_steps),
        "--save_steps", str(10**9),
        "--logging_steps", "1",
        "--max_completion_length", str(args.max_new_tokens),
        "--max_seq_length", str(max(1024, 512 + args.max_new_tokens)),
        "--report_to", "none",
        "--eval_holdout", "0",  # training steps only; the held-out evaluation is timed apart
    ]  # fmt: skip
    if args.toy:
        argv += ["--gradient_accumulation_steps", str(TOY_GRADIENT_ACCUMULATION)]
    if args.tokenizer == TINY_TOKENIZER:
        # The tiny tokenizer spends more tokens on the system prompt than Qwen's (as train.py --smoke).
        argv += ["--max_prompt_length", "512"]
    return argv


def run_train(args: BenchArguments, model_dir: Path, device: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """train.main in-process for --train_steps steps; seconds per step, split into generation and the rest."""
    import train
    from data import load_raw_split
    from options import read_layers

    config = read_layers([], train.RECIPE).config
    per_step = config["per_device_train_batch_size"] // config["num_generations"]
    prompts_per_step = per_step * (TOY_GRADIENT_ACCUMULATION if args.toy else config["gradient_accumulation_steps"])
    available = len(load_raw_split(args.dataset_name, "train"))
    if available < prompts_per_step:
        fail(
            f"{args.dataset_name}: {available} training problems, one step needs {prompts_per_step}: pass the full GSM8K"
        )

    timer = step_timer()
    with tempfile.TemporaryDirectory() as tmp, timed_trl_generation() as generations:
        output_dir = Path(tmp) / "run"
        reset_peak_memory()
        with contextlib.redirect_stdout(sys.stderr):  # train.py's log to stderr: stdout holds the figures
            argv = train_argv(args, model_dir, output_dir, prompts_per_step)
            # On the CPU (toy run) train.py must be told: it refuses to start the real run there by accident.
            train.main(argv + ([] if device["cuda"] else ["--use_cpu"]), extra_callbacks=[timer])
        memory = peak_memory()
        run_config = json.loads((output_dir / "run_config.json").read_text())["training"]
        logs = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    trl_step_time = {entry["step"]: entry["step_time"] for entry in logs if "step_time" in entry}

    steps = []
    for number, seconds in enumerate(timer.seconds, start=1):
        mine = [g for g in generations if g["step"] == number]
        generation = sum(g["seconds"] for g in mine)
        step = {
            "step": number,
            "seconds": seconds,
            "generation_s": generation,
            "rest_s": seconds - generation,
            "completions": sum(g["batch"] for g in mine),
            "completion_tokens": sum(g["completion_tokens"] for g in mine),
            "decode_slots": sum(g["batch"] * g["steps"] for g in mine),
            "tokens": sum(g["tokens"] for g in mine),
            "trl_step_time_s": trl_step_time.get(number),
            "generation_limit_s": None,
            "rest_limit_s": None,
        }
        if device["bandwidth"]:
            step["generation_limit_s"] = sum(
                decode_limit_seconds(
                    g["batch"],
                    g["prompt_len"],
                    g["steps"],
                    device["bandwidth"],
                    info["param_bytes"],
                    info["kv_bytes_per_token"],
                )
                for g in mine
            )
        if device["bf16_flops"]:
            flops = training_flops(
                info["parameters"], step["tokens"], run_config["gradient_checkpointing"], run_config["beta"]
            )
            step["rest_limit_s"] = flops / device["bf16_flops"]
        steps.append(step)
    timed = steps[1:] if len(steps) > 1 else steps  # the first step pays for warm-up
    if not all(s["completions"] for s in timed):
        fail("trl's GRPOTrainer._generate_single_turn did not run in every step: is this trl 1.15 or 1.16?")
    generation_s = sum(s["generation_s"] for s in timed)

    def mean(key: str) -> float | None:
        values = [s[key] for s in timed]
        return None if any(v is None for v in values) else sum(values) / len(values)

    return {
        "steps": steps,
        "timed_steps": [s["step"] for s in timed],
        "seconds_per_step": mean("seconds"),
        "generation_s_per_step": mean("generation_s"),
        "rest_s_per_step": mean("rest_s"),
        "generation_tokens_per_s": sum(s["completion_tokens"] for s in timed) / generation_s,
        "generation_limit_tokens_per_s": (
            sum(s["decode_slots"] for s in timed) / sum(s["generation_limit_s"] for s in timed)
            if device["bandwidth"]
            else None
        ),
        "generation_limit_s_per_step": mean("generation_limit_s"),
        "rest_limit_s_per_step": mean("rest_limit_s"),
        "trl_step_time_s": mean("trl_step_time_s"),
        "prompts_per_step": prompts_per_step,
        "completions_per_step": mean("completions"),
        "settings": {
            key: run_config[key]
            for key in (
                "num_generations",
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "max_completion_length",
                "optim",
                "bf16",
                "gradient_checkpointing",
                "beta",
                "use_vllm",
            )
        },
        **memory,
    }


def print_train(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(
        f"\ntrain (measured): train.main, --backend hf, LoRA r=32, {s['num_generations']} generations x "
        f"{result['prompts_per_step']} prompts per step, {s['max_completion_length']} completion tokens, "
        f"grad-accum {s['gradient_accumulation_steps']}, optim {s['optim']}, bf16 {s['bf16']}, beta {s['beta']}, "
        f"use_vllm {s['use_vllm']}"
    )
    print(f"{'step':>4} {'total':>9} {'generation':>11} {'rest':>9} {'completions':>11} {'trl step_time':>13}")
    for step in result["steps"]:
        trl_time = f"{step['trl_step_time_s']:.2f}s" if step["trl_step_time_s"] is not None else "n/a"
        warm = "" if step["step"] in result["timed_steps"] else "  (warm-up, left out)"
        print(
            f"{step['step']:>4} {step['seconds']:>8.2f}s {step['generation_s']:>10.2f}s {step['rest_s']:>8.2f}s "
            f"{step['completions']:>11} {trl_time:>13}{warm}"
        )
    gen, rest = result["generation_s_per_step"], result["rest_s_per_step"]
    gen_limit, rest_limit = result["generation_limit_s_per_step"], result["rest_limit_s_per_step"]
    print(f"per step: {result['seconds_per_step']:.2f} s = generation {gen:.2f} s + rest {rest:.2f} s")
    tokens_per_s = result["generation_tokens_per_s"]
    if gen_limit:
        limit = result["generation_limit_tokens_per_s"]
        print(
            f"  generation: {tokens_per_s:.1f} tokens/s, limit {limit:.0f} tokens/s ({percent(tokens_per_s, limit)}; "
            f"{gen_limit:.2f} s per step at the limit)"
        )
    else:
        print(f"  generation: {tokens_per_s:.1f} tokens/s (no limit: bandwidth unknown, pass --bandwidth_gbs)")
    if rest_limit:
        print(
            f"  rest (rewards, loss passes, optimizer): {rest_limit:.2f} s per step at the bf16 peak, "
            f"{percent(rest_limit, rest)} of the measured {rest:.2f} s"
        )
    trl_time = f"{result['trl_step_time_s']:.2f} s" if result["trl_step_time_s"] is not None else "n/a"
    print(
        f"  peak memory: {format_bytes(result['peak_memory_bytes'])} allocated, "
        f"{format_bytes(result['peak_reserved_bytes'])} reserved; trl's step_time (its micro-steps only): {trl_time}"
    )


# ---------------------------------------------------------------------------------------------------------
# One epoch, measured and projected


def estimate_epoch(result: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """One GSM8K train epoch at the measured step time, and on TARGET when this device's limits are known."""
    steps = epoch_steps(GSM8K_TRAIN_PROMPTS, result["prompts_per_step"])
    gen, rest = result["generation_s_per_step"], result["rest_s_per_step"]
    estimate: dict[str, Any] = {"steps": steps, "measured_s": steps * (gen + rest), "projected": None}
    if result["generation_limit_s_per_step"] is None:
        return estimate
    bandwidth_ratio = device["bandwidth"] / TARGET.bandwidth
    gen_projected = project_seconds(gen, result["generation_limit_s_per_step"], bandwidth_ratio)
    flops_ratio = device["bf16_flops"] / TARGET.bf16_flops if device["bf16_flops"] else None
    rest_projected = project_seconds(rest, result["rest_limit_s_per_step"], flops_ratio) if flops_ratio else rest
    estimate["projected"] = {
        "device": TARGET.name,
        "bandwidth_ratio": bandwidth_ratio,
        "flops_ratio": flops_ratio,
        "generation_s_per_step": gen_projected,
        "rest_s_per_step": rest_projected,
        "epoch_s": steps * (gen_projected + rest_projected),
        # Pessimistic bound: every second of generation bandwidth-bound, scaled whole.
        "epoch_s_all_generation_scaled": steps * (gen * bandwidth_ratio + rest_projected),
        "peak_memory_fits": None
        if result["peak_reserved_bytes"] is None
        else result["peak_reserved_bytes"] < TARGET_MEMORY,
    }
    return estimate


def print_epoch(estimate: dict[str, Any], result: dict[str, Any], device: dict[str, Any], toy: bool) -> None:
    steps = estimate["steps"]
    toy_note = " -- toy sizes, not the real model's cost" if toy else ""
    print(
        f"\nepoch: GSM8K train, {GSM8K_TRAIN_PROMPTS} prompts / {result['prompts_per_step']} per step = {steps} steps, "
        f"on {TRAIN_PATH}"
    )
    print(
        f"  measured  ({device['name']}): {steps} x {result['seconds_per_step']:.2f} s = {format_duration(estimate['measured_s'])}{toy_note}"
    )
    projected = estimate["projected"]
    if projected is None:
        print(
            f"  projected ({TARGET.name}): n/a (this device's bandwidth is unknown: pass --bandwidth_gbs and --tflops)"
        )
        return
    rest_how = (
        f"limit time x {projected['flops_ratio']:.2f} (TFLOPS ratio)"
        if projected["flops_ratio"]
        else "kept as measured (TFLOPS unknown: pass --tflops)"
    )
    per_step = projected["generation_s_per_step"] + projected["rest_s_per_step"]
    print(
        f"  projected ({TARGET.name}, {TARGET.bandwidth / GB:.0f} GB/s, {TARGET.bf16_flops / 1e12:.0f} TFLOPS): "
        f"generation {result['generation_s_per_step']:.2f} -> {projected['generation_s_per_step']:.2f} s, "
        f"rest {result['rest_s_per_step']:.2f} -> {projected['rest_s_per_step']:.2f} s: {steps} x {per_step:.2f} s = "
        f"{format_duration(projected['epoch_s'])}{toy_note}"
    )
    print(
        f"  (a projection, not a measurement: generation's limit time x {projected['bandwidth_ratio']:.2f} (bandwidth "
        f"ratio), rest's {rest_how}, the time above the limits kept as measured; with all generation time scaled by "
        f"bandwidth: {format_duration(projected['epoch_s_all_generation_scaled'])}"
        + (
            f"; peak reserved memory {format_bytes(result['peak_reserved_bytes'])} "
            f"{'fits' if projected['peak_memory_fits'] else 'does NOT fit'} in 24 GB)"
            if projected["peak_memory_fits"] is not None
            else ")"
        )
    )


def headline(report: dict[str, Any]) -> str:
    device, toy = report["device"]["name"], report["settings"]["toy"]
    suffix = " -- toy sizes" if toy else ""
    epoch = report.get("epoch")
    if epoch:
        line = f"epoch estimate ({TRAIN_PATH}): {format_duration(epoch['measured_s'])} on {device} (measured)"
        if epoch["projected"]:
            line += f", {format_duration(epoch['projected']['epoch_s'])} on {TARGET.name} (projected)"
        return line + suffix
    best = max(report["eval"], key=lambda r: r["tokens_per_s"])
    return (
        f"eval: {best['tokens_per_s']:.0f} generated tokens/s at batch {best['batch_size']} on {device} (measured), "
        f"1319 test prompts in {format_duration(best['test_set_s'])} worst case{suffix}"
    )


# ---------------------------------------------------------------------------------------------------------


def fail(message: str) -> None:
    print(f"gpu_bench.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None) -> BenchArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(BenchArguments, prog="gpu_bench.py", allow_abbrev=False)
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print every figure and its limit, write --output_json; returns the report."""
    import torch
    import transformers

    args = parse_args(argv)
    if args.skip_eval and args.skip_train:
        fail("--skip_eval and --skip_train together leave nothing to measure")
    device = describe_device(args)
    args = resolve_args(args, device["cuda"])
    transformers.logging.set_verbosity_error()  # trl / transformers notes about the random model's config
    limits = (f"{device['bandwidth'] / GB:.0f} GB/s" if device["bandwidth"] else "bandwidth unknown") + (
        f", {device['bf16_flops'] / 1e12:.0f} bf16 TFLOPS" if device["bf16_flops"] else ""
    )
    print(
        f"gpu_bench: {device['name']} ({limits}{'; ' + device['limits_from'] if device['limits_from'] else ''}), "
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "random-model"
        model, tokenizer, info = build_model(args, "cuda" if device["cuda"] else "cpu", model_dir)
        print(
            f"model: random weights, {info['shape']}, {info['parameters'] / 1e6:.1f}M parameters "
            f"({format_bytes(info['param_bytes'])} in {info['dtype']}), KV cache {info['kv_bytes_per_token']} bytes per "
            f"token; tokenizer {info['tokenizer']}; data {args.dataset_name}"
        )
        report: dict[str, Any] = {
            "device": device,
            "model": info,
            "settings": {k: v for k, v in asdict(args).items() if k not in ("skip_train", "skip_eval")},
            "eval": None,
            "train": None,
            "epoch": None,
        }
        if not args.skip_eval:
            report["eval"] = run_eval(model, tokenizer, args, device, info)
            print_eval(report["eval"], args)
        del model
        reset_peak_memory()  # training measures its own peak, without the evaluation's model
        if not args.skip_train:
            report["train"] = run_train(args, model_dir, device, info)
            print_train(report["train"])
            report["epoch"] = estimate_epoch(report["train"], device)
            print_epoch(report["epoch"], report["train"], device, args.toy)
    report["headline"] = headline(report)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['headline']}", flush=True)
    return report


if __name__ == "__main__":
    main()
