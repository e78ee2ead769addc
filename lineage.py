"""Which base model a full checkpoint was trained from, and whether two models belong in one comparison.

A LoRA adapter names its base (adapter_config.json's base_model_name_or_path); a full model does not. train.py
and sft.py record the model they started from in run_config.json, beside a checkpoint-N/ or merged/ folder or in
the folder itself (sft.py --use_peft false), so evaluate.py scores a full checkpoint against that model. A base
of another model family (architecture or vocabulary) would put two unrelated models in one table: refused.
Pure Python: reads JSON files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends import local_model_folder

RUN_CONFIG = "run_config.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trained_from(checkpoint: str | Path) -> str | None:
    """The model a training run started from, as its run_config.json records it (the checkpoint's folder, then
    the run folder above it); None when neither holds one."""
    folder = Path(checkpoint).expanduser().resolve()
    for candidate in (folder, folder.parent):
        config = _read_json(candidate / RUN_CONFIG)
        model = (config or {}).get("script", {}).get("model_name_or_path") if isinstance(config, dict) else None
        if isinstance(model, str) and model:
            return model
    return None


def family(model: str) -> tuple[str, int] | None:
    """(model_type, vocab_size) from a model's config.json on disk; None when it is not at hand."""
    folder = local_model_folder(model)
    config = _read_json(folder / "config.json") if folder else None
    if not isinstance(config, dict) or "model_type" not in config:
        return None
    return config["model_type"], config.get("vocab_size", 0)


def family_mismatch(base: str, tuned: str) -> str | None:
    """Why `tuned` cannot be compared with `base` (another architecture or vocabulary), or None."""
    base_family, tuned_family = family(base), family(tuned)
    if base_family is None or tuned_family is None or base_family == tuned_family:
        return None
    return (
        f"a {tuned_family[0]} model with {tuned_family[1]} tokens, and the base model {base} is a "
        f"{base_family[0]} model with {base_family[1]}: different model families"
    )
