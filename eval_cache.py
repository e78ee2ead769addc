"""evaluate.py's cache of base-model results: one folder per setting, so comparing a second checkpoint reuses them.

A folder holds base.jsonl (every example's record) and base.cache.json (the key it was made with: the base model
and a fingerprint of its files, dataset, split, limit, max_new_tokens, system prompt, backend, device), written
last so that it marks the records complete. Pure Python: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from models import local_model_folder
from prompts import SYSTEM_PROMPT
from run_metrics import read_jsonl, write_jsonl
from scoring import example_record

# The files that decide a model's greedy completions: weights, config, generation settings, tokenizer, chat template.
MODEL_FILES = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json", "config.json",
    "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "chat_template*", "*.model",
)  # fmt: skip


def model_fingerprint(name: str) -> str | None:
    """A digest of the names, sizes and modification times of a model's files; None when they are not on disk.

    `name` is a local folder or a hub name (its snapshot in the local hub cache). Retraining into the same
    folder rewrites these files, so the digest changes even though the path does not; reading the file sizes
    and times takes microseconds, where hashing the weights would take seconds per gigabyte.
    """
    folder = local_model_folder(name)  # a hub model's snapshots/<commit>/: a new revision is a new folder
    if folder is None:
        return None
    files = []
    for path in sorted(folder.iterdir()):
        if any(fnmatch(path.name, pattern) for pattern in MODEL_FILES) and path.is_file():
            stat = path.stat()  # follows the hub cache's links to the blobs
            files.append([path.name, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16] if files else None


def base_cache_key(
    base_model: str, dataset: str, split: str, limit: int | None, max_new_tokens: int, backend: str, on_cuda: bool
) -> dict[str, Any]:
    """Everything that decides the base model's greedy completions: results made with another key are not reused."""
    return {
        "base_model": base_model,
        "base_files": model_fingerprint(base_model),  # a model retrained in place is not the same model
        "dataset": dataset,
        "split": split,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "system_prompt": SYSTEM_PROMPT,
        "backend": backend,
        "device": "cuda" if on_cuda else "cpu",  # bf16 on a GPU, float32 on CPU: not the same greedy text
    }


def shared_base_cache(key: dict[str, Any]) -> Path:
    """Where base results are kept across checkpoints: one folder per cache key, under $GRPO_EVAL_CACHE.

    Each checkpoint gets its own output folder, so without this every comparison would regenerate the base.
    """
    root = Path(os.environ.get("GRPO_EVAL_CACHE", Path.home() / ".cache" / "grpo-home" / "eval")).expanduser()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / digest


def store_base(folder: Path, key: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Write base.jsonl and, last, the base.cache.json that marks them complete."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "base.jsonl", records)
    (folder / "base.cache.json").write_text(json.dumps(key, indent=2) + "\n")


def cached_key(folder: Path) -> dict[str, Any] | None:
    """The settings the base results in `folder` were made with, or None."""
    try:
        return json.loads((folder / "base.cache.json").read_text())
    except (OSError, ValueError):
        return None


def load_cached_base(output_dir: Path, key: dict[str, Any], questions) -> list[dict[str, Any]] | None:
    """The base model's records from an earlier run with the same key, rescored with today's scorer; else None."""
    if cached_key(output_dir) != key:
        return None
    try:
        cached, unreadable = read_jsonl(output_dir / "base.jsonl")
    except OSError:
        return None
    if unreadable or [r.get("gold") for r in cached] != list(questions["answer"]):
        return None
    return [
        example_record(i, r["question"], r["gold"], r["completion"], r["tokens"], r["cut_off"], r.get("token_ids"))
        for i, r in enumerate(cached)
    ]
