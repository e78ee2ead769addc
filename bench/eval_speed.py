"""Evaluation throughput: evaluate.py's batched greedy generation against one prompt at a time.

    # From the repo root, CPU, offline, under a minute: the tiny model, 32 prompts, 64 new tokens each
    python bench/eval_speed.py

    # Other sizes; --rounds fresh processes per variant, --repeat timed loops in each, the best counts
    python bench/eval_speed.py --n 64 --batch_size 16 --rounds 5 --repeat 3 --threads 1

    # A random model with Qwen2.5-0.5B's shape (float32, the tiny tokenizer, vocab still 151936), 8 prompts,
    # 16 new tokens, one round: about a minute on 2 idle cores
    python bench/eval_speed.py --qwen_shape

Both variants run evaluate.py's own code, `generation.generate_with_model`, the greedy loop inside
`generate_hf` (prompts sorted longest first, the system prompt's KV cache shared, attention.py's grouped-query
SDPA, greedy, stop at <|im_end|>): once with --batch_size (default 8, evaluate.py's CPU default before it chose
from the machine; bench/generation_speed.py compares batch sizes) and once with batch size 1. The prompts are the real
chat prompts (`data.get_gsm8k_questions` on the 24 shipped problems in samples/gsm8k, cycled up to --n).

Each round runs each variant in a fresh subprocess (order alternating between rounds): it loads the model
(`load_tokenizer`, `load_hf_model`), warms up on two prompts, times --repeat generation loops over all --n
prompts, then one whole `generate_hf` call (model load and its gc.collect included), printed for reference.
Throughput = completion tokens (Completion.num_tokens: up to and including the stop token, no padding) per
second of the best loop; the median is printed too. Peak RSS is each subprocess's own ru_maxrss (the
largest over rounds). The check: every prompt gets identical token ids in both variants, every round and
call, generate_hf's included (exit 1 if not). The last line is the headline ratio.

On a shared CPU, torch's default threads (one per core) can run many times slower than one thread whenever
another process takes a core: `--threads 1` gives steadier figures there. The load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
# Run as `python bench/eval_speed.py` from the repo root: the repo's modules live one folder up.
sys.path.insert(0, str(REPO_DIR))

import benchutil  # noqa: E402  (bench/ is on sys.path when run as a script)
from benchutil import peak_rss_mib  # noqa: E402

benchutil.go_offline()

VARIANTS = ("batched", "one-at-a-time")
# --qwen_shape: a 0.5B float32 model on 2 CPU cores: about a minute for this much, idle (4+ minutes when busy).
QWEN_DEFAULTS = {"n": 8, "max_new_tokens": 16, "rounds": 1, "repeat": 1}
TINY_DEFAULTS = {"n": 32, "max_new_tokens": 64, "rounds": 3, "repeat": 3}


def bench_prompts(n: int) -> list[list[dict[str, str]]]:
    """The chat messages of the 24 shipped problems (train then test split), cycled to `n` prompts."""
    from data import get_gsm8k_questions
    from smoke import SAMPLE_DATA_DIR

    messages = []
    for split in ("train", "test"):
        messages += get_gsm8k_questions(split=split, dataset_name=str(SAMPLE_DATA_DIR), report=lambda _: None)["prompt"]
    return [messages[i % len(messages)] for i in range(n)]


def build_model(model_dir: Path, qwen_shape: bool) -> None:
    """The tiny model (smoke.build_tiny_model), or a random Qwen2.5-0.5B-shaped one with the tiny tokenizer."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # "Writing model shards"; the workers keep theirs (captured)
    _build_model(model_dir, qwen_shape)


def _build_model(model_dir: Path, qwen_shape: bool) -> None:
    if not qwen_shape:
        from smoke import build_tiny_model

        build_tiny_model(model_dir)
        return
    import torch

    from smoke import QWEN25_05B_SHAPE, build_qwen2_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = build_qwen2_model(tokenizer, shape=QWEN25_05B_SHAPE, dtype=torch.float32)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


# ---------------------------------------------------------------------------------------------------------
# Worker: one variant, one fresh process


def worker(args: argparse.Namespace) -> None:
    """Load, warm up, time --repeat generation loops, then one whole generate_hf call; JSON to --out."""
    from generation import ModelSource, generate_hf, generate_with_model, load_hf_model, load_tokenizer

    source = ModelSource(label="base", model=args.model_dir, tokenizer=args.model_dir)
    messages = bench_prompts(args.n)
    batch_size = args.batch_size if args.variant == "batched" else 1
    tokenizer = load_tokenizer(source.tokenizer)
    model = load_hf_model(source)
    # Warm-up: first-call costs (lazy imports, allocator, kernels) stay out of the timed calls.
    generate_with_model(model, tokenizer, messages[: min(2, args.n)], max_new_tokens=4, batch_size=batch_size)
    calls = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        completions = generate_with_model(model, tokenizer, messages, args.max_new_tokens, batch_size)
        calls.append((time.perf_counter() - start, completions))
    del model
    start = time.perf_counter()
    whole = generate_hf(source, messages, max_new_tokens=args.max_new_tokens, batch_size=batch_size)
    whole_s = time.perf_counter() - start
    calls_ids = [[c.token_ids for c in completions] for _, completions in calls]
    result = {
        "gen_s": [seconds for seconds, _ in calls],
        "whole_s": whole_s,
        "tokens": sum(c.num_tokens for c in whole),
        "cut_off": sum(c.cut_off for c in whole),
        "token_ids": [*calls_ids, [c.token_ids for c in whole]],
        "peak_rss_mib": peak_rss_mib(),
    }
    Path(args.out).write_text(json.dumps(result))


def run_worker(variant: str, args: argparse.Namespace, model_dir: Path, out: Path) -> dict:
    flags = {
        "worker": variant,
        "model_dir": model_dir,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "threads": args.threads,
    }
    return benchutil.run_worker(__file__, flags, out, variant)


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token (the shorter length when one is a prefix of the other)."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, help="number of prompts (default: 32, 8 with --qwen_shape)")
    parser.add_argument("--max_new_tokens", type=int, help="completion token limit (default: 64, 16 with --qwen_shape)")
    parser.add_argument(
        "--batch_size", type=int, default=8, help="prompts per generate() call when batched (default 8)"
    )
    parser.add_argument("--rounds", type=int, help="fresh processes per variant (default: 3, 1 with --qwen_shape)")
    parser.add_argument(
        "--repeat", type=int, help="timed loops in each process; the best counts (default: 3, 1 with --qwen_shape)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in the timed processes (0: torch's choice)"
    )
    parser.add_argument("--qwen_shape", action="store_true", help="random Qwen2.5-0.5B-shaped model, not the tiny one")
    # Internal: one variant in this (fresh) process.
    parser.add_argument("--worker", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QWEN_DEFAULTS if args.qwen_shape else TINY_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.variant:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        worker(args)
        return 0
    if min(args.n, args.max_new_tokens, args.batch_size, args.rounds, args.repeat) < 1 or args.threads < 0:
        parser.error("--n, --max_new_tokens, --batch_size, --rounds and --repeat must be positive")

    import torch
    import transformers

    model_name = "Qwen2.5-0.5B shape, random, float32" if args.qwen_shape else "tiny model"
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{os.cpu_count()} CPUs, {args.threads or torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    with tempfile.TemporaryDirectory(prefix="eval_speed-") as tmp:
        model_dir = Path(tmp) / "model"
        start = time.perf_counter()
        build_model(model_dir, args.qwen_shape)
        print(f"model: {model_name} (built in {time.perf_counter() - start:.1f} s)")
        from generation import load_tokenizer, prompt_texts

        tokenizer = load_tokenizer(str(model_dir))
        texts = prompt_texts(tokenizer, bench_prompts(args.n))
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        print(
            f"prompts: {args.n} (the 24 sample problems, cycled), {min(lengths)}-{max(lengths)} tokens; "
            f"max_new_tokens {args.max_new_tokens}; batch size {args.batch_size} vs 1; "
            f"{args.rounds} round(s) x {args.repeat} timed loop(s)"
        )
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]  # alternate, so drift hits both alike
            for variant in order:
                result = run_worker(variant, args, model_dir, Path(tmp) / f"{variant}-{round_index}.json")
                runs[variant].append(result)
                calls = " ".join(f"{seconds:.2f}" for seconds in result["gen_s"])
                print(
                    f"  round {round_index + 1} {variant:>13}: generation {calls} s; whole generate_hf call "
                    f"{result['whole_s']:.2f} s; "
                    f"peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )

    # --- check: the same token ids for every prompt, in every variant, round and call ----------------------
    reference = runs["batched"][0]["token_ids"][0]
    mismatches = []
    for variant in VARIANTS:
        for round_index, result in enumerate(runs[variant]):
            for call in result["token_ids"]:
                for i, (ids, ref) in enumerate(zip(call, reference)):
                    if ids != ref:
                        mismatches.append((variant, round_index + 1, i, first_difference(ids, ref)))
    tokens = runs["batched"][0]["tokens"]
    cut_off = runs["batched"][0]["cut_off"]
    if mismatches:
        print(f"\nCHECK FAILED: {len(mismatches)} completions differ; first 5 as (variant, round, prompt, token):")
        print("  " + "; ".join(map(str, mismatches[:5])))
    else:
        print(f"\ncheck: identical token ids for all {args.n} prompts in both variants, every round and call")
    print(f"completion tokens per call: {tokens} ({tokens / args.n:.1f} per prompt, {cut_off} of {args.n} cut off)")

    # --- figures -----------------------------------------------------------------------------------------
    gen = {v: [seconds for r in runs[v] for seconds in r["gen_s"]] for v in VARIANTS}
    whole = {v: [r["whole_s"] for r in runs[v]] for v in VARIANTS}
    best = {v: min(gen[v]) for v in VARIANTS}
    median = {v: statistics.median(gen[v]) for v in VARIANTS}
    print(
        f"\ngeneration loop (generate_with_model, model loaded), best of {args.rounds * args.repeat} calls "
        f"[median]; load average {os.getloadavg()[0]:.1f} at the end:"
    )
    for v in VARIANTS:
        rss = max(r["peak_rss_mib"] for r in runs[v])
        print(
            f"  {v:>13}: {best[v]:7.2f} s [{median[v]:7.2f}]  {tokens / best[v]:8.1f} tokens/s "
            f"[{tokens / median[v]:8.1f}]  whole generate_hf call, best {min(whole[v]):.2f} s  peak RSS {rss:.0f} MiB"
        )
    print(
        f"ratios: medians {median['one-at-a-time'] / median['batched']:.2f}x; whole generate_hf calls (load and "
        f"gc included), best {min(whole['one-at-a-time']) / min(whole['batched']):.2f}x"
    )
    ratio = best["one-at-a-time"] / best["batched"]
    device = "CUDA" if torch.cuda.is_available() else "CPU"  # where generation.load_hf_model puts the model
    print(f"batched vs one-at-a-time: {ratio:.2f}x tokens/s ({model_name}, batch {args.batch_size}, {device})")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
