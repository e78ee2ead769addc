"""evaluate.py's scoring: the pure scorer of one completion, per-model summaries, and the records kept on disk.

`score_completion` is the exact check of the reward (rewards.extract_xml_answer + rewards.is_correct), so the
accuracy evaluate.py reports and the held-out accuracy train.py logs (heldout.py) cannot disagree with what
the reward pays for. The base model's records are cached per setting, so a second comparison reuses them.
Pure Python: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from backends import local_model_folder
from rewards import extract_xml_answer, is_correct, last_number, normalize_number

BLOG_STRICT = {"base": 0.0887, "tuned": 0.6528}  # greedy GSM8K test accuracy reported by the blog
FORMAT_TAGS = ("reasoning", "validate", "answer")
METRICS = ("strict", "numeric", "flexible", "formatted", "mean_tokens", "cut_off")


# ---------------------------------------------------------------------------------------------------------
# Scoring


def is_formatted(text: str) -> bool:
    """True when <reasoning>, <validate> and <answer> sections (opening and closing tags) appear in that order."""
    position = 0
    for tag in FORMAT_TAGS:
        for marker in (f"<{tag}>", f"</{tag}>"):
            position = text.find(marker, position)
            if position < 0:
                return False
            position += len(marker)
    return True


def score_completion(completion: str, gold: str) -> dict[str, bool]:
    """Score one completion against its gold answer: strict, numeric, flexible, formatted (all bools)."""
    answer = extract_xml_answer(completion)
    gold_number = normalize_number(gold)
    flexible = last_number(completion)
    return {
        "strict": is_correct(answer, gold),
        "numeric": is_correct(answer, gold, match="numeric"),
        "flexible": flexible is not None and flexible == gold_number,
        "formatted": is_formatted(completion),
    }


def example_record(
    index: int, question: str, gold: str, completion: str, tokens: int, cut_off: bool, token_ids: list[int] | None = None
) -> dict[str, Any]:
    """One JSONL line: the problem, the completion, what was extracted from it, its scores and its token ids."""
    answer = extract_xml_answer(completion)
    return {
        "index": index,
        "question": question,
        "gold": gold,
        "completion": completion,
        "answer": answer,
        "answer_number": normalize_number(answer),
        "last_number": last_number(completion),
        **score_completion(completion, gold),
        "tokens": tokens,
        "cut_off": cut_off,
        "token_ids": token_ids,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, float | int]:
    """Per-model totals: the share of examples passing each score, mean completion tokens, share cut off."""
    n = len(records)
    totals: dict[str, float | int] = {"n": n}
    for metric in METRICS:
        key = "tokens" if metric == "mean_tokens" else metric
        totals[metric] = sum(float(r[key]) for r in records) / n if n else 0.0
    return totals


def format_table(summaries: dict[str, dict[str, float | int]]) -> str:
    """One row per model, one column per metric."""
    columns = ("n", *METRICS)
    lines = ["model  " + "  ".join(f"{c:>11}" for c in columns)]
    for label, totals in summaries.items():
        cells = [f"{totals['n']:>11d}"] + [
            f"{totals[c]:>11.1f}" if c == "mean_tokens" else f"{totals[c]:>11.4f}" for c in METRICS
        ]
        lines.append(f"{label:<5}  " + "  ".join(cells))
    return "\n".join(lines)


MEANING = (
    f"strict = the blog's metric (<answer> text == gold exactly; blog, all 1319 test problems: base "
    f"{BLOG_STRICT['base']} -> tuned {BLOG_STRICT['tuned']}); numeric = <answer> read as a number; flexible = last "
    f"number in the completion; formatted = reasoning/validate/answer tags in order; cut_off = share stopped by "
    f"--max_new_tokens."
)


# ---------------------------------------------------------------------------------------------------------
# Records on disk: one JSONL line per example, and the base model's cache


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


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
        cached = [json.loads(line) for line in (output_dir / "base.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return None
    if [r["gold"] for r in cached] != list(questions["answer"]):
        return None
    return [
        example_record(i, r["question"], r["gold"], r["completion"], r["tokens"], r["cut_off"], r.get("token_ids"))
        for i, r in enumerate(cached)
    ]
