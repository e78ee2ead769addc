"""What the benchmarks share: paths, offline mode, the random model, prompts, and timers of generate and steps.

Importing it puts the repo's own modules on sys.path, so `python bench/SCRIPT.py` runs from anywhere.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_DIR.parent / "shared"
QWEN_TOKENIZER = SHARED_DIR / "tokenizers" / "qwen2.5"
GSM8K = SHARED_DIR / "data" / "gsm8k"
sys.path.insert(0, str(REPO_DIR))


def go_offline() -> None:
    """Never reach the Hugging Face hub: the benchmarks build their own models and read local data."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")


def build_random_model(folder: Path, shape: dict | None, dtype: Any = None) -> None:
    """A random Qwen2 of `shape` with the real Qwen2.5 tokenizer (../shared) in `folder`; None: smoke's tiny model."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    if shape is None:
        from tiny_model import build_tiny_model

        build_tiny_model(folder)
        return
    from transformers import AutoTokenizer

    from tiny_model import build_qwen2_model

    tokenizer = AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
    build_qwen2_model(tokenizer, shape, dtype=dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def model_costs(model: Any) -> dict[str, Any]:
    """Parameters, weight bytes, head size and KV-cache bytes per token of context: what the limits need."""
    from roofline import kv_bytes_per_token

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = next(model.parameters()).element_size()
    params = sum(p.numel() for p in model.parameters())  # tied embeddings once: they are read once
    return {
        "params": params,
        "param_bytes": params * size,
        "head_dim": head_dim,
        "kv_per_token": kv_bytes_per_token(config.num_hidden_layers, config.num_key_value_heads, head_dim, size),
    }


def gsm8k_prompts(dataset_name: str, count: int) -> list:
    """`count` chat prompts from the test split, repeated when it has fewer."""
    from data import get_gsm8k_questions

    prompts = list(get_gsm8k_questions(split="test", dataset_name=dataset_name, limit=count)["prompt"])
    return [prompts[i % len(prompts)] for i in range(count)]


# ---------------------------------------------------------------------------------------------------------
# Commands run as a user runs them, measured by the operating system


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Offline, and no allocator preloaded by this process: a script started with it chooses its own (allocator.py)."""
    env = dict(os.environ if env is None else env)
    for name in ("LD_PRELOAD", "GRPO_ALLOCATOR_TRIED"):
        env.pop(name, None)
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_measured(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `command` (output to `log`); its wall, user and kernel seconds and peak resident GB, descendants included.

    wait4 reports the process's own usage (a script that starts itself again keeps its pid), its CPU times with
    its children's, and the largest resident size among it and its children (demo.py's stages, vLLM's workers).
    `env`: variables to set on top of clean_env(). Exit code other than 0: SystemExit naming the log.
    """
    import subprocess

    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env={**clean_env(), **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{Path(sys.argv[0]).name}: error: {' '.join(command[1:3])} failed (exit {process.returncode}); see {log}")
    allocator_lines = [line for line in log.read_text().splitlines() if "allocator: " in line]
    return {
        "wall": time.perf_counter() - start, "user": usage.ru_utime, "kernel": usage.ru_stime,
        "peak_gb": usage.ru_maxrss * 1024 / 1e9,  # kibibytes
        "allocator": allocator_lines[0].split("allocator: ", 1)[1] if allocator_lines else "glibc malloc (not chosen)",
    }  # fmt: skip


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo) and its core count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "cpu"
    return f"{name}, {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------------------
# Timers


def synchronize() -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock:
    """A generate() streamer that only notes when each put() comes: the prompt first, then one per step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@contextmanager
def timed_generate(model: Any, clock_steps: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Record every model.generate call: rows, padded prompt length, decoding steps and seconds.

    clock_steps: also give each call a StepClock (its put times in "times"). Off on a GPU: the streamer copies
    every step's tokens to the host.
    """
    calls: list[dict[str, Any]] = []
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        clock = StepClock() if clock_steps else None
        synchronize()
        start = time.perf_counter()
        output = original(*args, **kwargs, **({"streamer": clock} if clock else {}))
        synchronize()
        prompt_len = kwargs["input_ids"].shape[1]
        calls.append({
            "batch": output.shape[0], "prompt_len": prompt_len, "steps": output.shape[1] - prompt_len,
            "seconds": time.perf_counter() - start, "times": clock.times if clock else None,
        })  # fmt: skip
        return output

    model.generate = generate
    try:
        yield calls
    finally:
        del model.generate  # the class's own method again


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


def reset_peak_memory() -> None:
    """Free what can be freed and start counting the GPU's peak memory again."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, int | None]:
    """Peak GPU memory since the last reset: allocated by tensors, and reserved by torch's allocator."""
    import torch

    cuda = torch.cuda.is_available()
    return {"peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None}  # fmt: skip


def decode_limit(calls: list[dict[str, Any]], bandwidth: float, param_bytes: float, kv_per_token: float) -> tuple:
    """(decoding slots: rows x steps, least seconds at `bandwidth`) of recorded generate calls, each at its context."""
    from roofline import decode_limit_seconds

    seconds = [decode_limit_seconds(c["batch"], c["prompt_len"], c["steps"], bandwidth, param_bytes, kv_per_token)
               for c in calls]  # fmt: skip
    return sum(c["batch"] * c["steps"] for c in calls), sum(seconds)
