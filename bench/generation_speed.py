"""Greedy generation speed on the transformers path, held against this machine's limits, in one run.

    # From the repo root, with ../shared (Qwen2.5 tokenizer, GSM8K test): a random Qwen2.5-0.5B-shaped model in
    # float32, 32 prompts, 64 new tokens, 2 threads (~30 minutes on 2 busy cores)
    python bench/generation_speed.py
    # fewer variants: no batch-size sweeps, one round
    python bench/generation_speed.py --sweep --today_sweep --rounds 1
    # toy size (tiny model and tokenizer, sample problems), as the test suite runs it
    python bench/generation_speed.py --toy --n 4 --max_new_tokens 8 --sweep 2 --today_sweep 2 --pipeline_n 2 --threads 1

Variants, all on the same prompts (GSM8K test, the chat template of evaluate.py), greedy, stop at <|im_end|>:
    today      generation.generate_with_model as it was before attention.py: transformers' "sdpa" attention, no
               shared prefix, evaluate.py's old default batch (8 on CPU, 16 on CUDA)
    new@B      generation.generate_with_model as evaluate.py runs it now: attention.GQA_SDPA, the system prompt's
               KV cache shared, batch B; B = roofline.decode_batch_size's choice for this machine ("chosen"), and
               each of --sweep
    pipeline   a plain loop over `pipeline("text-generation")` (its own copy of the model, default attention), one
               prompt at a time, on every (n / --pipeline_n)-th prompt
The headline variants (today, new@chosen, pipeline) run --rounds times, their order alternating; the sweeps
(new@B for each --sweep B, today@B for each --today_sweep B) once.

Per variant: end-to-end tokens/s (completion tokens, stop token included, over the wall time of the whole loop:
tokenizing, the shared prefix, prefill, decoding), and the same tokens per second of the CPU time this process
spent (steadier than wall time when other processes share the cores; with 2 threads it counts their waits too); decode tokens/s (rows x steps after the first token, over
the time from the first token to the last, timed by a streamer given to each generate() call); prefill seconds.
Decode speed is held against this machine's limits, measured here by roofline.measure_limits (the best rate of
summing 256 MiB and of a 2048^2 matmul in the model's dtype, at the start and at the end of the run): the
bandwidth limit (each decoding step reads every weight and the batch's KV cache once: batch x bandwidth /
(weight bytes + KV bytes at the average context)) and the compute limit (FLOP/s / (2 x parameters)).

Check: every variant gives every prompt the same token ids as `today` (exit 1 if not; the first difference is
printed). The last line is the headline: new@chosen against today and against the pipeline loop, end to end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

import benchutil  # noqa: E402  (bench/ is on sys.path when run as a script)
from benchutil import GSM8K, QWEN_TOKENIZER  # noqa: E402
from hardware import GB, decode_limit_tokens_per_s, kv_bytes_per_token  # noqa: E402

benchutil.go_offline()

TODAY_BATCH = {"cpu": 8, "cuda": 16}  # evaluate.py's constant defaults before roofline.decode_batch_size


class StepClock:
    """A generate() streamer that only notes when each put() comes: the prompt first, then one per step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@contextmanager
def clocked_generate(model: Any):
    """Give every model.generate call a StepClock; yields a list of (rows, prompt length, put times) per call."""
    calls: list[tuple[int, int, list[float]]] = []
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        clock = StepClock()
        output = original(*args, streamer=clock, **kwargs)
        calls.append((output.shape[0], kwargs["input_ids"].shape[1], clock.times))
        return output

    model.generate = generate
    try:
        yield calls
    finally:
        del model.generate  # the class's own method again


# ---------------------------------------------------------------------------------------------------------
# Model, prompts, limits


def build_model(folder: Path, toy: bool) -> None:
    """A random Qwen2.5-0.5B-shaped float32 model with the real tokenizer, or smoke's tiny model (--toy)."""
    import torch

    from smoke import QWEN25_05B_SHAPE

    benchutil.build_random_model(folder, None if toy else QWEN25_05B_SHAPE, dtype=torch.float32)


def load_prompts(dataset_name: str, n: int) -> list:
    from data import get_gsm8k_questions

    prompts = list(get_gsm8k_questions(split="test", dataset_name=dataset_name, report=lambda _: None)["prompt"])
    return [prompts[i % len(prompts)] for i in range(n)]


def model_costs(model: Any) -> dict[str, float]:
    """Parameters, weight bytes and KV bytes per token of context, for the limits."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = next(model.parameters()).element_size()
    params = sum(p.numel() for p in model.parameters())  # tied embeddings once: they are read once
    return {
        "params": params,
        "param_bytes": params * size,
        "kv_per_token": kv_bytes_per_token(config.num_hidden_layers, config.num_key_value_heads, head_dim, size),
    }


# ---------------------------------------------------------------------------------------------------------
# One variant


def run_variant(name: str, model: Any, tokenizer: Any, prompts: list, args: argparse.Namespace, batch: int) -> dict:
    """`today...` or `new...` through generation.generate_with_model; the figures of one pass over `prompts`."""
    from attention import GQA_SDPA
    from generation import generate_with_model

    today = name.startswith("today")
    model.set_attn_implementation("sdpa" if today else GQA_SDPA)
    with clocked_generate(model) as calls:
        start, start_cpu = time.perf_counter(), time.process_time()
        completions = generate_with_model(
            model, tokenizer, prompts, args.max_new_tokens, batch, label=name, share_prefix=not today
        )
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
    with clocked_generate(pipe.model) as calls:
        start, start_cpu = time.perf_counter(), time.process_time()
        for messages in prompts:
            out = pipe(messages, max_new_tokens=args.max_new_tokens, do_sample=False, return_tensors=True)
            prompt_len = calls[-1][1]
            ids.append(to_completion(pipe.tokenizer, out[0]["generated_token_ids"][prompt_len:], stop_ids).token_ids)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return figures("pipeline", 1, wall, cpu, calls, ids)


def figures(name: str, batch: int, wall: float, cpu: float, calls: list, token_ids: list[list[int]]) -> dict:
    tokens = sum(len(ids) for ids in token_ids)
    decode_tokens = sum(rows * (len(times) - 2) for rows, _, times in calls)
    decode_s = sum(times[-1] - times[1] for _, _, times in calls)
    return {
        "name": name,
        "batch": batch,
        "wall_s": wall,
        "tokens": tokens,
        "e2e_tokens_per_s": tokens / wall,
        "cpu_tokens_per_s": tokens / cpu,
        "prefill_s": sum(times[1] - times[0] for _, _, times in calls),
        "decode_tokens_per_s": decode_tokens / decode_s if decode_s else float("nan"),
        "calls": [(rows, prompt_len, len(times) - 1) for rows, prompt_len, times in calls],
        "token_ids": token_ids,
    }


def decode_limits(result: dict, costs: dict, limits: Any) -> tuple[float, float]:
    """(bandwidth limit, compute limit) in decode tokens/s for the calls this variant made, at their average context."""
    slots = seconds = 0.0
    for rows, prompt_len, steps in result["calls"]:
        context = prompt_len + steps / 2
        rate = decode_limit_tokens_per_s(rows, limits.bandwidth, costs["param_bytes"], costs["kv_per_token"], context)
        slots += rows * steps
        seconds += rows * steps / rate
    return slots / seconds, limits.flops / (2 * costs["params"])


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32, help="prompts (default 32)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="completion token limit (default 64)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[8, 16, 32, 64], help="new-path batch sizes, run once")
    parser.add_argument(
        "--today_sweep", type=int, nargs="*", default=[16], help="today-path batch sizes, run once (default 16)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="passes of today / new@chosen / pipeline (default 2)")
    parser.add_argument("--pipeline_n", type=int, default=8, help="prompts of the pipeline loop (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--toy", action="store_true", help="smoke's tiny model and the sample problems")
    args = parser.parse_args(argv)
    if min(args.n, args.max_new_tokens, args.rounds, args.pipeline_n, args.threads, *args.sweep, *args.today_sweep) < 1:
        parser.error("every number must be positive")
    if not args.toy and not QWEN_TOKENIZER.is_dir():
        parser.error(f"no Qwen2.5 tokenizer at {QWEN_TOKENIZER}: run with --toy")
    import torch
    import transformers

    from generation import ModelSource, load_hf_model, load_tokenizer, prompt_texts
    from roofline import decode_batch_size, measure_limits
    from smoke import SAMPLE_DATA_DIR

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the pipeline's notes on its own generation settings
    dataset = str(SAMPLE_DATA_DIR if args.toy or not GSM8K.is_dir() else GSM8K)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{os.cpu_count()} CPUs, {args.threads} torch threads; load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="generation_speed-") as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, args.toy)
        source = ModelSource("bench", str(model_dir), str(model_dir))
        tokenizer = load_tokenizer(source.tokenizer)
        model = load_hf_model(source)
        device = model.device.type
        limits_start = measure_limits(model.device, model.dtype)
        chosen = decode_batch_size(model, limits_start, prompts=args.n)
        costs = model_costs(model)
        prompts = load_prompts(dataset, args.n)
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompt_texts(tokenizer, prompts)]
        print(
            f"model: {'tiny (smoke)' if args.toy else 'random Qwen2.5-0.5B shape'}, {costs['params'] / 1e6:.1f}M "
            f"parameters, {model.dtype}, {device}; {args.n} prompts from {dataset} ({min(lengths)}-{max(lengths)} "
            f"tokens), {args.max_new_tokens} new tokens\nlimits: {limits_start.describe()} (start); "
            f"chosen batch {chosen}",
            flush=True,
        )
        headline = {"today": TODAY_BATCH.get(device, 8), "new@chosen": chosen}
        for round_index in range(args.rounds):
            order = ["today", "new@chosen", "pipeline"]
            for name in order if round_index % 2 == 0 else order[::-1]:
                if name == "pipeline":
                    result = run_pipeline(model_dir, prompts[:: max(1, args.n // args.pipeline_n)], args)
                else:
                    result = run_variant(name, model, tokenizer, prompts, args, headline[name])
                results.append(result)
                print(f"  round {round_index + 1} {name}: {result['e2e_tokens_per_s']:.1f} tokens/s end to end", flush=True)
        sweep = [(f"new@{b}", b) for b in args.sweep if b != chosen] + [(f"today@{b}", b) for b in args.today_sweep]
        for name, batch in sweep:  # new@chosen is the new path's row at the chosen batch
            results.append(run_variant(name, model, tokenizer, prompts, args, batch))
            print(f"  sweep {name}: {results[-1]['e2e_tokens_per_s']:.1f} tokens/s end to end", flush=True)
        limits_end = measure_limits(model.device, model.dtype)
    print(f"limits: {limits_end.describe()} (end); load average {os.getloadavg()[0]:.1f} at the end")

    # --- check: the same token ids as today, prompt by prompt -------------------------------------------------
    reference = next(r for r in results if r["name"] == "today")["token_ids"]
    pipeline_index = list(range(0, args.n, max(1, args.n // args.pipeline_n)))
    failures = []
    for r in results:
        expected = [reference[i] for i in pipeline_index] if r["name"] == "pipeline" else reference
        differing = [k for k, (a, b) in enumerate(zip(r["token_ids"], expected)) if a != b]
        if differing:
            failures.append(f"{r['name']}: {len(differing)} of {len(expected)} completions differ (first: prompt {differing[0]})")
    tokens = sum(len(ids) for ids in reference)
    if failures:
        print("\nCHECK FAILED: " + "; ".join(failures))
    else:
        print(f"\ncheck: every variant gives every prompt the same token ids as today ({tokens} completion tokens)")

    # --- figures: the best of each variant's passes ---------------------------------------------------------
    limits = max(limits_start, limits_end, key=lambda lim: lim.bandwidth)  # the less loaded measurement
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
        print(
            f"{name:>12} {r['batch']:>5} {r['wall_s']:>8.1f} {r['e2e_tokens_per_s']:>10.1f} "
            f"{r['cpu_tokens_per_s']:>9.1f} {r['prefill_s']:>9.1f} "
            f"{decode:>12.1f} {bandwidth_limit:>15.1f} {100 * decode / bandwidth_limit:>5.0f}% {compute_limit:>13.1f} "
            f"{100 * decode / compute_limit:>5.0f}%"
        )
    rounds = {name: [r["e2e_tokens_per_s"] for r in results if r["name"] == name] for name in headline}
    print(
        "medians of rounds, end to end: "
        + ", ".join(f"{name} {statistics.median(values):.1f} tokens/s" for name, values in rounds.items())
    )
    new, today, pipe = (best[name]["e2e_tokens_per_s"] for name in ("new@chosen", "today", "pipeline"))
    print(
        f"new@{chosen} vs today@{headline['today']}: {new / today:.2f}x; vs pipeline one at a time: "
        f"{new / pipe:.2f}x end-to-end tokens/s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
