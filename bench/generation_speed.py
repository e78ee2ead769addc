"""Greedy generation speed on the transformers path, held against this machine's limits, in one run.

    # From the repo root, with ../shared (Qwen2.5 tokenizer, GSM8K test): a random Qwen2.5-0.5B-shaped model in
    # float32, 32 prompts, 64 new tokens, 2 threads (~30 minutes on 2 busy cores)
    python bench/generation_speed.py
    # fewer variants: no batch-size sweep, one round
    python bench/generation_speed.py --sweep --rounds 1
    # toy size (tiny model and tokenizer, sample problems), as the test suite runs it
    python bench/generation_speed.py --toy --n 4 --max_new_tokens 8 --sweep 2 --pipeline_n 2 --threads 1

Variants, all on the same prompts (GSM8K test, the chat template of evaluate.py), greedy, stop at <|im_end|>:
    new@B      generation.generate_with_model as evaluate.py runs it: attention.GQA_SDPA, the system prompt's
               KV cache shared, batch B; B = roofline.decode_batch_size's choice for this machine ("chosen"), and
               each of --sweep
    pipeline   a plain loop over `pipeline("text-generation")` (its own copy of the model, default attention), one
               prompt at a time, on every (n / --pipeline_n)-th prompt
The headline variants (new@chosen, pipeline) run --rounds times, their order alternating; the sweep once.
(The `today` variants, the path before attention.py, were retired after commit 28a6da8: docs/BENCHMARKS.md.)

Per variant: end-to-end tokens/s (completion tokens over the wall time of the whole loop), the same per second
of this process's CPU time (steadier on shared cores), decode tokens/s (rows x steps after the first token, over
the time from the first token to the last, from a streamer) and prefill seconds. Decode speed is held against
this machine's limits, measured by roofline.measure_limits at the start and the end of the run: bandwidth
(batch x bandwidth / (weight bytes + KV bytes at the average context)) and compute (FLOP/s / (2 x parameters)).

Check: every variant gives every prompt the same token ids as new@chosen (exit 1 if not; the first difference is
printed). The last line is the headline: new@chosen against the pipeline loop, end to end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import benchutil
from benchutil import GSM8K, QWEN_TOKENIZER
from roofline import GB

benchutil.go_offline()


def run_variant(name: str, model: Any, tokenizer: Any, prompts: list, args: argparse.Namespace, batch: int) -> dict:
    """generation.generate_with_model as evaluate.py runs it, at `batch`; the figures of one pass over `prompts`."""
    from generation import generate_with_model

    with benchutil.timed_generate(model, clock_steps=True) as calls:
        start, start_cpu = time.perf_counter(), time.process_time()
        completions = generate_with_model(model, tokenizer, prompts, args.max_new_tokens, batch, label=name)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return figures(name, batch, wall, cpu, calls, [c.token_ids for c in completions])


def run_pipeline(model_dir: Path, prompts: list, args: argparse.Namespace) -> dict:
    """A plain one-at-a-time pipeline("text-generation") loop; completions cut at the stop token as ours are."""
    import torch
    from transformers import pipeline

    from generation import stop_token_ids, to_completion

    pipe = pipeline("text-generation", model=str(model_dir), dtype=torch.float32, device="cpu")
    stop_ids = stop_token_ids(pipe.tokenizer, pipe.model)
    ids = []
    with benchutil.timed_generate(pipe.model, clock_steps=True) as calls:
        start, start_cpu = time.perf_counter(), time.process_time()
        for messages in prompts:
            out = pipe(messages, max_new_tokens=args.max_new_tokens, do_sample=False, return_tensors=True)
            prompt_len = calls[-1]["prompt_len"]
            ids.append(to_completion(pipe.tokenizer, out[0]["generated_token_ids"][prompt_len:], stop_ids).token_ids)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return figures("pipeline", 1, wall, cpu, calls, ids)


def figures(name: str, batch: int, wall: float, cpu: float, calls: list, token_ids: list[list[int]]) -> dict:
    """One pass's figures from its wall and CPU time and its recorded generate calls (their StepClock times)."""
    tokens = sum(len(ids) for ids in token_ids)
    decode_tokens = sum(c["batch"] * (len(c["times"]) - 2) for c in calls)
    decode_s = sum(c["times"][-1] - c["times"][1] for c in calls)
    return {
        "name": name, "batch": batch, "wall_s": wall, "tokens": tokens, "e2e_tokens_per_s": tokens / wall,
        "cpu_tokens_per_s": tokens / cpu, "prefill_s": sum(c["times"][1] - c["times"][0] for c in calls),
        "decode_tokens_per_s": decode_tokens / decode_s if decode_s else float("nan"), "calls": calls,
        "token_ids": token_ids,
    }  # fmt: skip


def decode_limits(result: dict, costs: dict, limits: Any) -> tuple[float, float]:
    """(bandwidth limit, compute limit) in decode tokens/s for the calls this variant made, at their average context."""
    slots, seconds = benchutil.decode_limit(result["calls"], limits.bandwidth, costs["param_bytes"], costs["kv_per_token"])
    return slots / seconds, limits.flops / (2 * costs["params"])


def check(results: list[dict], n: int, pipeline_n: int) -> list[str]:
    """Each variant's token ids against new@chosen's, prompt by prompt; one line per variant that differs."""
    reference = next(r for r in results if r["name"] == "new@chosen")["token_ids"]
    pipeline_index = list(range(0, n, max(1, n // pipeline_n)))
    failures = []
    for r in results:
        expected = [reference[i] for i in pipeline_index] if r["name"] == "pipeline" else reference
        differing = [k for k, (a, b) in enumerate(zip(r["token_ids"], expected)) if a != b]
        if differing:
            failures.append(f"{r['name']}: {len(differing)} of {len(expected)} completions differ (first: prompt {differing[0]})")
    return failures


def print_table(results: list[dict], costs: dict, limits: Any) -> dict[str, dict]:
    """One line per variant, its best pass, against the machine's limits; returns the best passes."""
    print(
        f"\nlimits used: {limits.bandwidth / GB:.1f} GB/s, {limits.flops / 1e9:.0f} GFLOP/s; weights "
        f"{costs['param_bytes'] / GB:.2f} GB, KV {costs['kv_per_token']} bytes per token\n"
        f"{'variant':>12} {'batch':>5} {'wall s':>8} {'e2e tok/s':>10} {'per CPU s':>9} {'prefill s':>9} "
        f"{'decode tok/s':>12} {'bandwidth limit':>15} {'share':>6} {'compute limit':>13} {'share':>6}"
    )
    best: dict[str, dict] = {}
    for r in results:
        if r["name"] not in best or r["wall_s"] < best[r["name"]]["wall_s"]:
            best[r["name"]] = r
    for name, r in best.items():
        bandwidth_limit, compute_limit = decode_limits(r, costs, limits)
        decode = r["decode_tokens_per_s"]
        print(f"{name:>12} {r['batch']:>5} {r['wall_s']:>8.1f} {r['e2e_tokens_per_s']:>10.1f} {r['cpu_tokens_per_s']:>9.1f} "
              f"{r['prefill_s']:>9.1f} {decode:>12.1f} {bandwidth_limit:>15.1f} {100 * decode / bandwidth_limit:>5.0f}% "
              f"{compute_limit:>13.1f} {100 * decode / compute_limit:>5.0f}%")  # fmt: skip
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32, help="prompts (default 32)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="completion token limit (default 64)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[8, 16, 32, 64], help="batch sizes, run once")
    parser.add_argument("--rounds", type=int, default=2, help="passes of new@chosen / pipeline (default 2)")
    parser.add_argument("--pipeline_n", type=int, default=8, help="prompts of the pipeline loop (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--toy", action="store_true", help="smoke's tiny model and the sample problems")
    args = parser.parse_args(argv)
    if min(args.n, args.max_new_tokens, args.rounds, args.pipeline_n, args.threads, *args.sweep) < 1:
        parser.error("every number must be positive")
    if not args.toy and not QWEN_TOKENIZER.is_dir():
        parser.error(f"no Qwen2.5 tokenizer at {QWEN_TOKENIZER}: run with --toy")
    import torch
    import transformers

    from data import SAMPLE_DATA_DIR
    from generation import ModelSource, load_hf_model, load_tokenizer, prompt_texts
    from roofline import decode_batch_size, measure_limits
    from tiny_model import QWEN25_05B_SHAPE

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the pipeline's notes on its own generation settings
    dataset = str(SAMPLE_DATA_DIR if args.toy or not GSM8K.is_dir() else GSM8K)
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{os.cpu_count()} CPUs, {args.threads} torch threads; load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="generation_speed-") as tmp:
        model_dir = Path(tmp) / "model"
        benchutil.build_random_model(model_dir, None if args.toy else QWEN25_05B_SHAPE, dtype=torch.float32)
        source = ModelSource("bench", str(model_dir), str(model_dir))
        tokenizer = load_tokenizer(source.tokenizer)
        model = load_hf_model(source)
        limits_start = measure_limits(model.device, model.dtype)
        chosen = decode_batch_size(model, limits_start, prompts=args.n)
        costs = benchutil.model_costs(model)
        prompts = benchutil.gsm8k_prompts(dataset, args.n)
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompt_texts(tokenizer, prompts)]
        print(
            f"model: {'tiny (smoke)' if args.toy else 'random Qwen2.5-0.5B shape'}, {costs['params'] / 1e6:.1f}M "
            f"parameters, {model.dtype}, {model.device.type}; {args.n} prompts from {dataset} ({min(lengths)}-"
            f"{max(lengths)} tokens), {args.max_new_tokens} new tokens\nlimits: {limits_start.describe()} (start); "
            f"chosen batch {chosen}",
            flush=True,
        )
        for round_index in range(args.rounds):
            order = ["new@chosen", "pipeline"]
            for name in order if round_index % 2 == 0 else order[::-1]:
                if name == "pipeline":
                    result = run_pipeline(model_dir, prompts[:: max(1, args.n // args.pipeline_n)], args)
                else:
                    result = run_variant(name, model, tokenizer, prompts, args, chosen)
                results.append(result)
                print(f"  round {round_index + 1} {name}: {result['e2e_tokens_per_s']:.1f} tokens/s end to end", flush=True)
        for batch in (b for b in args.sweep if b != chosen):  # new@chosen is the row at the chosen batch
            results.append(run_variant(f"new@{batch}", model, tokenizer, prompts, args, batch))
            print(f"  sweep new@{batch}: {results[-1]['e2e_tokens_per_s']:.1f} tokens/s end to end", flush=True)
        limits_end = measure_limits(model.device, model.dtype)
    print(f"limits: {limits_end.describe()} (end); load average {os.getloadavg()[0]:.1f} at the end")

    failures = check(results, args.n, args.pipeline_n)
    if failures:
        print("\nCHECK FAILED: " + "; ".join(failures))
    else:
        tokens = sum(len(ids) for ids in next(r for r in results if r["name"] == "new@chosen")["token_ids"])
        print(f"\ncheck: every variant gives every prompt the same token ids as new@chosen ({tokens} completion tokens)")
    best = print_table(results, costs, max(limits_start, limits_end, key=lambda lim: lim.bandwidth))  # the less loaded
    medians = {name: statistics.median(r["e2e_tokens_per_s"] for r in results if r["name"] == name)
               for name in ("new@chosen", "pipeline")}  # fmt: skip
    print("medians of rounds, end to end: " + ", ".join(f"{name} {m:.1f} tokens/s" for name, m in medians.items()))
    new, pipe = best["new@chosen"]["e2e_tokens_per_s"], best["pipeline"]["e2e_tokens_per_s"]
    print(f"new@{chosen} vs pipeline one at a time: {new / pipe:.2f}x end-to-end tokens/s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
