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

A random-weight model with Qwen2.5-0.5B-Instruct's exact shape (tiny_model.QWEN25_05B_SHAPE) costs the same per
token as the real one. Random weights rarely stop early, so every completion runs to the token limit: the
figures are a worst case. What it measures, with the project's own code paths, each held against its limit:
1. evaluation (gpu_eval.py): generation.generate_with_model, evaluate.py's batched greedy transformers path, on
   GSM8K test prompts at several batch sizes: tokens/s, peak GPU memory, and the worst case for all 1319;
2. training (gpu_train.py): train.main([...]) in-process, `--backend hf --use_vllm false` with the recipe's
   settings (LoRA r=32, 2 generations, 512 completion tokens, 32 prompts per step): seconds per optimizer step,
   split into generation (trl's GRPOTrainer._generate_single_turn, timed) and the rest; peak GPU memory. The
   first step is warm-up and left out of the means when there are more;
3. the limits (roofline.py): decoding reads every weight and the KV cache once per step, so tokens/s <= batch x
   bandwidth / (weight bytes + KV bytes at the average context); training's rest is held against the dense
   bf16 peak. Bandwidth and TFLOPS come from roofline.KNOWN_GPUS or --bandwidth_gbs / --tflops;
4. one epoch of GSM8K train (7473 prompts / 32 per step = 233 steps) at the measured step time, and a projection
   to a 24 GB RTX 3090 (gpu_report.py): each part's time at its limit scaled by the bandwidth (generation) or
   TFLOPS (rest) ratio, the time above the limit kept as measured. A projection, and printed as one.
The figures go to stdout (the last line is the headline) and, with --output_json, to a JSON file; progress bars
and train.py's own log go to stderr. What the GPU machine needs installed: docs/BENCHMARKS.md, gpu_bench.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchutil import GSM8K, QWEN_TOKENIZER, model_costs, reset_peak_memory  # first: puts the repo on sys.path
from data import SAMPLE_DATA_DIR
from gpu_eval import print_eval, run_eval
from gpu_report import estimate_epoch, format_bytes, headline, print_epoch
from gpu_train import TINY_TOKENIZER, print_train, run_train
from options import exit_with
from roofline import GB, find_gpu
from tiny_model import QWEN25_05B_SHAPE, TINY_SHAPE

PROG = "gpu_bench.py"
DEFAULT_TOKENIZER = QWEN_TOKENIZER
DEFAULT_DATASET = GSM8K
GPU_BATCH_SIZES = [1, 8, 16, 32, 64]  # 16: evaluate.py's default on CUDA; 64: one GRPO step's completions
TOY_BATCH_SIZES = [1, 2]
GPU_MAX_NEW_TOKENS = 512  # the recipe's max_completion_length and evaluate.py's default
TOY_MAX_NEW_TOKENS = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """gpu_bench.py's flags; the defaults that depend on the device are filled by resolve_args."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], allow_abbrev=False)
    add = parser.add_argument
    add("--tokenizer", help=f"Qwen2.5 tokenizer folder, or '{TINY_TOKENIZER}' (smoke's, --toy only). Default: "
        f"{DEFAULT_TOKENIZER} if present, else {TINY_TOKENIZER} on toy runs.")  # fmt: skip
    add("--toy", action="store_true", help="Toy sizes on a GPU too (tiny model, short completions). Always on without a GPU.")
    add("--num_prompts", type=int, help="GSM8K test prompts per batch size (repeated if the data has fewer). Default: 2 x batch.")
    add("--batch_sizes", type=int, nargs="+", help=f"Evaluation batch sizes. Default: {GPU_BATCH_SIZES}, toy {TOY_BATCH_SIZES}.")
    add("--max_new_tokens", type=int, help=f"Completion tokens, eval and training. Default: {GPU_MAX_NEW_TOKENS}, "
        f"toy {TOY_MAX_NEW_TOKENS}.")  # fmt: skip
    add("--train_steps", type=int, default=3, help="Optimizer steps to time (the first is warm-up).")
    add("--dataset_name", help=f"GSM8K-format data (see data.py). Default: {DEFAULT_DATASET} if present, else {SAMPLE_DATA_DIR}.")
    add("--skip_train", action="store_true", help="Skip the training measurement.")
    add("--skip_eval", action="store_true", help="Skip the evaluation measurement.")
    add("--output_json", help="Also write every figure to this JSON file.")
    add("--bandwidth_gbs", type=float, help="Memory bandwidth of this device in GB/s. Default: from KNOWN_GPUS (none on CPU).")
    add("--tflops", type=float, help="Dense bf16 TFLOPS of this device. Default: from KNOWN_GPUS (none on CPU).")
    add("--seed", type=int, default=0, help="Seed of the random weights.")
    return parser.parse_args(argv)


def resolve_args(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    """Fill the defaults that depend on the device; a GPU run without a tokenizer is an error (exit code 2)."""
    args.toy = args.toy or not cuda  # Qwen2.5-0.5B's size with 512-token answers would take hours on a CPU
    args.batch_sizes = args.batch_sizes or (TOY_BATCH_SIZES if args.toy else GPU_BATCH_SIZES)
    args.max_new_tokens = args.max_new_tokens or (TOY_MAX_NEW_TOKENS if args.toy else GPU_MAX_NEW_TOKENS)
    if args.tokenizer is None:
        args.tokenizer = str(DEFAULT_TOKENIZER) if DEFAULT_TOKENIZER.is_dir() else TINY_TOKENIZER
    if args.tokenizer == TINY_TOKENIZER and not args.toy:
        exit_with(PROG, f"no Qwen2.5 tokenizer: pass --tokenizer with its folder ({DEFAULT_TOKENIZER} is missing)")
    if args.tokenizer != TINY_TOKENIZER and not Path(args.tokenizer).is_dir():
        exit_with(PROG, f"--tokenizer {args.tokenizer}: no such folder")
    if args.dataset_name is None:
        args.dataset_name = str(DEFAULT_DATASET if DEFAULT_DATASET.is_dir() else SAMPLE_DATA_DIR)
    if min(args.batch_sizes) < 1 or args.max_new_tokens < 1 or args.train_steps < 1 or (args.num_prompts or 1) < 1:
        exit_with(PROG, "--batch_sizes, --max_new_tokens, --train_steps and --num_prompts must be positive")
    return args


def describe_device(args: argparse.Namespace) -> dict[str, Any]:
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
    return {"name": name, "cuda": torch.cuda.is_available(), "bandwidth": bandwidth, "bf16_flops": flops,
            "limits_from": source}  # fmt: skip


def build_model(args: argparse.Namespace, device: str, folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The random model (Qwen2.5-0.5B's shape, or tiny) and its tokenizer, saved to `folder` for train.py."""
    import torch

    from attention import register
    from generation import load_tokenizer
    from tiny_model import build_qwen2_model, build_tiny_tokenizer

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
    config, costs = model.config, model_costs(model)
    info = {
        "shape": "toy (tiny_model.TINY_SHAPE)" if args.toy else "Qwen2.5-0.5B-Instruct (tiny_model.QWEN25_05B_SHAPE)",
        "parameters": costs["params"], "param_bytes": costs["param_bytes"], "dtype": str(dtype).removeprefix("torch."),
        "layers": config.num_hidden_layers, "kv_heads": config.num_key_value_heads, "head_dim": costs["head_dim"],
        "vocab_size": config.vocab_size, "kv_bytes_per_token": costs["kv_per_token"],
        "tokenizer": "tiny_model.build_tiny_tokenizer()" if args.tokenizer == TINY_TOKENIZER else args.tokenizer,
        "attention": model.config._attn_implementation,
    }  # fmt: skip
    return model.eval(), load_tokenizer(str(folder)), info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print every figure and its limit, write --output_json; returns the report."""
    import torch
    import transformers

    args = parse_args(argv)
    if args.skip_eval and args.skip_train:
        exit_with(PROG, "--skip_eval and --skip_train together leave nothing to measure")
    device = describe_device(args)
    args = resolve_args(args, device["cuda"])
    transformers.logging.set_verbosity_error()  # trl / transformers notes about the random model's config
    limits = f"{device['bandwidth'] / GB:.0f} GB/s" if device["bandwidth"] else "bandwidth unknown"
    limits += f", {device['bf16_flops'] / 1e12:.0f} bf16 TFLOPS" if device["bf16_flops"] else ""
    limits += f"; {device['limits_from']}" if device["limits_from"] else ""
    print(f"gpu_bench: {device['name']} ({limits}), torch {torch.__version__}, transformers {transformers.__version__}",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "random-model"
        model, tokenizer, info = build_model(args, "cuda" if device["cuda"] else "cpu", model_dir)
        print(f"model: random weights, {info['shape']}, {info['parameters'] / 1e6:.1f}M parameters "
              f"({format_bytes(info['param_bytes'])} in {info['dtype']}), KV cache {info['kv_bytes_per_token']} bytes "
              f"per token; tokenizer {info['tokenizer']}; data {args.dataset_name}")  # fmt: skip
        settings = {k: v for k, v in vars(args).items() if k not in ("skip_train", "skip_eval")}
        report: dict[str, Any] = {"device": device, "model": info, "settings": settings, "eval": None,
                                  "train": None, "epoch": None}  # fmt: skip
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
