"""Small helpers the benchmarks share: peak memory, and running one variant in a fresh process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_DIR.parent / "shared"
QWEN_TOKENIZER = SHARED_DIR / "tokenizers" / "qwen2.5"
GSM8K = SHARED_DIR / "data" / "gsm8k"


def go_offline() -> None:
    """Never reach the Hugging Face hub: the benchmarks build their own models and read local data."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_worker(script: str | Path, flags: dict, out: Path, label: str) -> dict:
    """Run `python SCRIPT --key=value ...` from the repo root and return the JSON it wrote to `out`.

    A fresh process per variant, so each one's peak RSS is its own. `--key=value`: a value may start with "--".
    """
    command = [sys.executable, str(script), *(f"--{key}={value}" for key, value in flags.items()), f"--out={out}"]
    done = subprocess.run(command, check=False, cwd=REPO_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{label} worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(Path(out).read_text())


def build_random_model(folder: Path, shape: dict | None, dtype: Any = None) -> None:
    """A random Qwen2 of `shape` with the real Qwen2.5 tokenizer (../shared) in `folder`; None: smoke's tiny model."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    if shape is None:
        from smoke import build_tiny_model

        build_tiny_model(folder)
        return
    from transformers import AutoTokenizer

    from smoke import build_qwen2_model

    tokenizer = AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
    build_qwen2_model(tokenizer, shape, dtype=dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
