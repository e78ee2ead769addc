"""GSM8K loading: from the Hugging Face hub or a local copy, as chat prompts with their gold answers.

`get_gsm8k_questions()` returns a `datasets.Dataset` with the columns
    question  the problem text
    prompt    the chat messages (prompts.build_messages), what GRPOTrainer and evaluate.py feed the model
    answer    the gold answer: the text after "####" in GSM8K's solution (extract_hash_answer)

Sources: a hub dataset name (default `openai/gsm8k`, config `main`) or a local path: a .jsonl/.json/.parquet
file, a folder of such files (the file whose name starts with the split is used), or a dataset saved with
`save_to_disk`. Every local source needs the GSM8K columns `question` and `answer`.
`datasets` is imported inside the functions, so this module loads in milliseconds and never imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prompts import SYSTEM_PROMPT, build_messages

# The few made-up GSM8K-format problems shipped with the repo: --smoke runs and the tests read them.
SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "samples" / "gsm8k"

DEFAULT_DATASET = "openai/gsm8k"
DEFAULT_CONFIG = "main"
DATA_FILE_TYPES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
REQUIRED_COLUMNS = ("question", "answer")


class DatasetError(ValueError):
    """A dataset that cannot be used, with a one-line message naming the source and what is wrong."""


def extract_hash_answer(text: str | None) -> str | None:
    """The gold answer in a GSM8K solution: the stripped text after "####", or None without one."""
    if not text or "####" not in text:
        return None
    return text.split("####")[1].strip()


def is_local_source(name: str) -> bool:
    """True when `name` is meant as a path: it exists, or looks like a file or a relative/absolute path."""
    if os.path.exists(name):
        return True
    return name.startswith((".", "/", "~")) or Path(name).suffix in DATA_FILE_TYPES or name.count("/") > 1


def _split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in DATA_FILE_TYPES)
    if not files:
        raise DatasetError(f"{folder}: no .jsonl, .json or .parquet files and no saved dataset in this folder")
    chosen = [p for p in files if p.name.startswith(split)]
    if not chosen:
        names = ", ".join(p.name for p in files[:5])
        raise DatasetError(f"{folder}: no file for split '{split}' (expected a name starting with '{split}'; found {names})")
    if len({p.suffix for p in chosen}) > 1:
        raise DatasetError(f"{folder}: split '{split}' has files of mixed types: {', '.join(p.name for p in chosen)}")
    return chosen


def load_raw_split(
    source: str, split: str = "train", config: str | None = DEFAULT_CONFIG, required: tuple[str, ...] = REQUIRED_COLUMNS
):
    """Load one split of GSM8K-format data (columns question, answer) from the hub or a local path."""
    import datasets

    if not is_local_source(source):
        try:
            return datasets.load_dataset(source, config, split=split)
        except Exception as error:  # the hub raises many types: connection, not found, offline mode, ...
            raise DatasetError(
                f"could not load '{source}' ({config}, {split}) from the Hugging Face hub: "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} -- offline? pass a "
                f"local copy instead, e.g. --dataset_name path/to/gsm8k/ (a folder with train.jsonl and test.jsonl)"
            ) from error

    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{path}: not readable (permission denied)")
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DatasetError(f"{path}: saved dataset has no split '{split}' (has {', '.join(loaded)})")
                loaded = loaded[split]
            return _check_columns(loaded, path, required)
        files = _split_files(path, split) if path.is_dir() else [path]
        builder = DATA_FILE_TYPES.get(files[0].suffix)
        if builder is None:
            raise DatasetError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
        loaded = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except DatasetError:
        raise
    except Exception as error:
        root = error
        while root.__cause__ is not None:  # datasets wraps the parser's error: name what was really wrong
            root = root.__cause__
        detail = str(root).splitlines()[0] if str(root) else ""
        raise DatasetError(f"{path}: cannot be read as GSM8K data ({type(root).__name__}: {detail})") from error
    return _check_columns(loaded, path, required)


def _check_columns(dataset, path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS):
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(dataset.column_names) or 'none'})"
        )
    return dataset


def prompt_token_count(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Number of tokens the chat template makes of `messages`, generation prompt included."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return len(ids)


def _report(message: str) -> None:
    print(f"[data] {message}", file=sys.stderr)


def shuffle_and_limit(dataset: Any, seed: int | None, limit: int | None, where: str) -> Any:
    """Shuffled with `seed` (None: file order), cut to `limit` rows; DatasetError when no row is left."""
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    if len(dataset) == 0:
        raise DatasetError(f"{where}: no usable rows left")
    return dataset


def get_gsm8k_questions(
    split: str = "train",
    dataset_name: str = DEFAULT_DATASET,
    config: str | None = DEFAULT_CONFIG,
    limit: int | None = None,
    seed: int | None = None,
    max_prompt_tokens: int | None = None,
    tokenizer: Any = None,
    system_prompt: str = SYSTEM_PROMPT,
    report: Callable[[str], None] = _report,
):
    """GSM8K as a Dataset of question / prompt (chat messages) / answer (gold text after "####").

    Rows without "####" or with an empty question or answer are dropped and counted. `seed` shuffles,
    `limit` keeps the first rows after that, and `max_prompt_tokens` (with `tokenizer`) drops prompts the
    chat template makes longer than that budget: trl no longer truncates prompts itself.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of rows, got {limit}")
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("max_prompt_tokens needs the tokenizer that will encode the prompts")
    raw = load_raw_split(dataset_name, split, config)
    extra_columns = [c for c in raw.column_names if c not in REQUIRED_COLUMNS]
    raw = raw.remove_columns(extra_columns)

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        # The question goes to the model as it is (as in the blog); only an all-blank one counts as empty.
        question = row["question"] if isinstance(row["question"], str) and row["question"].strip() else ""
        gold = extract_hash_answer(row["answer"] if isinstance(row["answer"], str) else None)
        return {
            "question": question,
            "prompt": build_messages(question, system_prompt),
            "answer": gold or "",
        }

    dataset = raw.map(to_example, desc="Building prompts")
    usable = dataset.filter(lambda row: bool(row["question"]) and bool(row["answer"]), desc="Dropping bad rows")
    dropped = len(dataset) - len(usable)
    if dropped:
        report(f"{dataset_name} ({split}): dropped {dropped} of {len(dataset)} rows without a question or a '####' answer")
    dataset = usable

    if max_prompt_tokens is not None:
        before = len(dataset)
        dataset = dataset.filter(
            lambda row: prompt_token_count(tokenizer, row["prompt"]) <= max_prompt_tokens, desc="Prompt length"
        )
        if before - len(dataset):
            report(f"{dataset_name} ({split}): dropped {before - len(dataset)} prompts longer than {max_prompt_tokens} tokens")
    return shuffle_and_limit(dataset, seed, limit, f"{dataset_name} ({split})")


# ---------------------------------------------------------------------------------------------------------
# Supervised cold start (sft.py): GSM8K's own solutions written in the prompt's answer format

ANNOTATION = re.compile(r"<<([^<>]*)>>")


def strip_annotations(solution: str) -> str:
    """A GSM8K solution without its calculator annotations: "48/2 = <<48/2=24>>24" -> "48/2 = 24"."""
    return ANNOTATION.sub("", solution)


def validation_text(solution: str, gold: str, steps: int | None = None) -> str:
    """A short re-check of a GSM8K solution, built from its calculator annotations ("48/2=24" -> "48/2 = 24"):
    all of them, or the last `steps`."""
    checks = []
    for annotation in ANNOTATION.findall(solution):
        expression, equals, result = annotation.rpartition("=")
        checks.append(f"{expression} = {result}" if equals else annotation)
    if not checks:
        return f"Reading the problem again, the reasoning holds and gives {gold}."
    what, verdict = "each step", "Every step holds"
    if steps and steps < len(checks):
        checks = checks[-steps:]
        what, verdict = ("the last step" if steps == 1 else f"the last {steps} steps"), "It holds"
    return f"Checking {what} again: {'; '.join(checks)}. {verdict}, so the answer is {gold}."


def sft_completion(solution: str, validate_steps: int | None = None) -> str | None:
    """The assistant's answer in the system prompt's format, built from a GSM8K solution; None without "####".

    reasoning = the worked solution without annotations, validate = a re-check of its calculations (all, or the
    last `validate_steps`), answer = the gold text after "####", exactly as the strict metric compares it.
    """
    gold = extract_hash_answer(solution)
    if not gold:
        return None
    worked = solution.split("####")[0]
    reasoning = strip_annotations(worked).strip()
    return (
        f"<reasoning>\n{reasoning}\n</reasoning>\n<validate>\n{validation_text(worked, gold, validate_steps)}\n"
        f"</validate>\n<answer>\n{gold}\n</answer>"
    )


def get_sft_dataset(
    split: str = "train",
    dataset_name: str = DEFAULT_DATASET,
    config: str | None = DEFAULT_CONFIG,
    limit: int | None = None,
    seed: int | None = None,
    system_prompt: str = SYSTEM_PROMPT,
    report: Callable[[str], None] = _report,
    exclude: set[str] = frozenset(),
    validate_steps: int | None = None,
):
    """Prompt-completion pairs for supervised fine-tuning, as trl's SFTTrainer takes them (conversational).

    `prompt` is the chat messages training and evaluation use; `completion` is one assistant message: the
    source's own `completion` column when it has one, else built from the GSM8K solution (sft_completion).
    Rows whose question is in `exclude` (held-out problems) are dropped before shuffling and `limit`.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive number of rows, got {limit}")
    probe = load_raw_split(dataset_name, split, config, required=("question",))
    own_completions = "completion" in probe.column_names
    raw = probe if own_completions else _check_columns(probe, Path(dataset_name), REQUIRED_COLUMNS)

    def to_example(row: dict[str, Any]) -> dict[str, Any]:
        question = row["question"] if isinstance(row["question"], str) and row["question"].strip() else ""
        if own_completions:
            text = row["completion"] if isinstance(row["completion"], str) and row["completion"].strip() else None
        else:
            text = sft_completion(row["answer"], validate_steps) if isinstance(row["answer"], str) else None
        return {
            "prompt": build_messages(question, system_prompt),
            "completion": [{"role": "assistant", "content": text or ""}],
            "usable": bool(question and text) and question not in exclude,
        }

    dataset = raw.map(to_example, remove_columns=raw.column_names, desc="Building SFT examples")
    usable = dataset.filter(lambda row: row["usable"], desc="Dropping bad rows").remove_columns("usable")
    bad = len(dataset) - len(usable) - sum(q in exclude for q in raw["question"])
    if bad:
        what = "a completion" if own_completions else "a '####' answer"
        report(f"{dataset_name} ({split}): dropped {bad} of {len(dataset)} rows without a question or {what}")
    return shuffle_and_limit(usable, seed, limit, f"{dataset_name} ({split})")
