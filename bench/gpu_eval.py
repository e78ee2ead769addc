"""gpu_bench.py's evaluation figures: evaluate.py's batched greedy transformers path, timed per batch size."""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchutil import decode_limit, gsm8k_prompts, peak_memory, reset_peak_memory, synchronize, timed_generate
from gpu_report import GSM8K_TEST_PROMPTS, format_bytes, format_duration, percent


def run_eval(
    model: Any, tokenizer: Any, args: argparse.Namespace, device: dict[str, Any], info: dict[str, Any]
) -> list[dict[str, Any]]:
    """Greedy generation at each batch size; one row of figures per batch size."""
    from generation import generate_with_model
    from roofline import decode_batch_size, measure_limits

    rows = []
    # evaluate.py's own default batch on this device joins the list (full runs; toy runs keep theirs).
    chosen = decode_batch_size(model, measure_limits(model.device, model.dtype), context=512 + args.max_new_tokens)
    batches = args.batch_sizes + ([chosen] if not args.toy and chosen not in args.batch_sizes else [])
    pool = gsm8k_prompts(args.dataset_name, args.num_prompts or 2 * max(batches))
    for batch in batches:
        prompts = pool[: args.num_prompts or 2 * batch]
        prompts += [pool[i % len(pool)] for i in range(len(prompts), batch)]  # at least one full batch
        # Warm-up (kernels, allocator) at this batch size, not timed.
        generate_with_model(model, tokenizer, prompts[:batch], min(4, args.max_new_tokens), batch, label="warm-up")
        reset_peak_memory()
        with timed_generate(model) as calls:
            synchronize()
            start = time.perf_counter()
            completions = generate_with_model(model, tokenizer, prompts, args.max_new_tokens, batch, label=f"batch {batch}")
            synchronize()
            wall = time.perf_counter() - start
        tokens = sum(c.num_tokens for c in completions)
        row = {
            "batch_size": batch, "evaluate_default": batch == chosen, "prompts": len(prompts),
            "generated_tokens": tokens, "cut_off_share": sum(c.cut_off for c in completions) / len(completions),
            "mean_padded_prompt_tokens": sum(c["prompt_len"] * c["batch"] for c in calls) / len(prompts),
            "wall_s": wall, "tokens_per_s": tokens / wall,
            "test_set_s": GSM8K_TEST_PROMPTS * wall / len(prompts),  # worst case: every answer to the limit
            **peak_memory(), "limit_tokens_per_s": None, "percent_of_limit": None,
        }  # fmt: skip
        if device["bandwidth"]:
            slots, limit_s = decode_limit(calls, device["bandwidth"], info["param_bytes"], info["kv_bytes_per_token"])
            row["limit_tokens_per_s"] = slots / limit_s
            row["percent_of_limit"] = 100 * row["tokens_per_s"] / row["limit_tokens_per_s"]
        rows.append(row)
    return rows


def print_eval(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The evaluation table: one line per batch size, against its bandwidth limit."""
    print(
        f"\neval (measured): generation.generate_with_model, evaluate.py's greedy transformers path (attention.py's "
        f"grouped-query SDPA, the system prompt's KV cache shared), GSM8K test prompts, max_new_tokens "
        f"{args.max_new_tokens}; peak = torch.cuda.max_memory_allocated; * = evaluate.py's default batch here"
    )
    print(
        f"{'batch':>5} {'prompts':>7} {'tokens':>7} {'wall':>9} {'tokens/s':>10} {'limit tok/s':>11} {'of limit':>8} "
        f"{'peak mem':>9} {'1319 test prompts':>18}"
    )
    for r in rows:
        limit = f"{r['limit_tokens_per_s']:.0f}" if r["limit_tokens_per_s"] else "n/a"
        peak = format_bytes(r["peak_memory_bytes"])
        print(
            f"{r['batch_size']:>4}{'*' if r['evaluate_default'] else ' '} {r['prompts']:>7} {r['generated_tokens']:>7} "
            f"{r['wall_s']:>8.2f}s {r['tokens_per_s']:>10.1f} {limit:>11} "
            f"{percent(r['tokens_per_s'], r['limit_tokens_per_s']):>8} {peak:>9} {format_duration(r['test_set_s']):>18}"
        )
    print(
        "limit = batch x bandwidth / (weights + KV cache at the average context) per decoding step; the 1319-prompt "
        "time is a worst case (random weights: every completion runs to max_new_tokens)"
    )
