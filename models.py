"""Where a model is and what it is, read from its files before anything loads it.

- where: a local folder, or a hub name: its snapshot in the local Hugging Face cache, else the hub itself
  (`local_model_folder`, `find_model`);
- its weights: present and readable (`unreadable_weights` reads the safetensors headers only), and how many
  parameters they hold (`count_parameters`);
- what it is: a LoRA adapter or a full model (`read_checkpoint`), its config.json (`model_config`), its tokenizer;
- where it came from: a LoRA adapter names its base (adapter_config.json's base_model_name_or_path); a full model
  does not, so train.py and sft.py record the model they started from in run_config.json, beside a checkpoint-N/
  or merged/ folder or in the folder itself (sft.py --use_peft false), and evaluate.py scores a full checkpoint
  against that model (`trained_from`). A base of another family (architecture or vocabulary) would put two
  unrelated models in one table (`family_mismatch`).

Evaluation (evaluate.py, ask.py, export_gguf.py, eval_cache.py, vllm_generation.py) and training (checks.py for
train.py and sft.py) both find their models here; loading a model for training is backends.py's. safetensors and
huggingface_hub are imported inside the functions, and nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data import is_local_source

RUN_CONFIG = "run_config.json"
# Weight files in the order transformers / peft look for them; a sharded model has an index naming its shards.
MODEL_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# What peft needs to rebuild a LoRA adapter (and vLLM to size its slots).
ADAPTER_CONFIG_KEYS = ("r", "target_modules")


class InputError(ValueError):
    """Bad input found before any model loads; the CLIs print it as one line and exit with code 2."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- where it is -------------------------------------------------------------------------------------------


def local_model_folder(name: str) -> Path | None:
    """The folder holding a model's files: `name` itself when it is a folder, else its snapshot in the local
    Hugging Face cache (snapshots/<commit>/); None when neither is on disk. Never reaches the network."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    try:
        import huggingface_hub

        config = huggingface_hub.try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 -- not a repo id, or no hub cache: nothing on disk
        return None
    return Path(config).parent if isinstance(config, str) else None


def find_model(name: str) -> str | None:
    """Why `name` is not a usable model: None when it is a local folder with config.json and weights, or on the hub."""
    if Path(name).expanduser().is_dir() or is_local_source(name):
        if not (Path(name).expanduser() / "config.json").is_file():
            return "no local folder with config.json"
        return unreadable_weights(name)
    import huggingface_hub
    from huggingface_hub import constants

    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
            return None
        if constants.HF_HUB_OFFLINE:
            return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
        return None if huggingface_hub.file_exists(name, "config.json") else "not on the Hugging Face hub"
    except Exception as error:  # noqa: BLE001 -- bad repo id, no network, ...: all mean "cannot be loaded"
        return f"not found locally nor on the Hugging Face hub ({type(error).__name__})"


# --- its weights -------------------------------------------------------------------------------------------


def _weight_files(folder: Path, names: tuple[str, ...]) -> list[Path] | str:
    """The weight files of `folder` (the shards an index names), or why there are none."""
    found = next((folder / name for name in names if (folder / name).is_file()), None)
    if found is None:
        return f"no weights: none of {', '.join(names)}"
    if not found.name.endswith(".index.json"):
        return [found]
    try:
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as error:
        return f"{found.name} cannot be read ({type(error).__name__})"
    return [folder / shard for shard in shards]


def unreadable_weights(folder: str | Path, names: tuple[str, ...] = MODEL_WEIGHTS) -> str | None:
    """Why the weights in `folder` cannot load (none there, a truncated or corrupt safetensors file); None if fine.

    Reads only the safetensors headers (safetensors checks that they cover the whole file), so it takes
    milliseconds and imports no torch: a file cut short by a full disk or an interrupted copy is found here
    instead of after minutes of generation.
    """
    from safetensors import SafetensorError, safe_open

    files = _weight_files(Path(folder).expanduser(), names)
    if isinstance(files, str):
        return files
    for file in files:
        if not file.is_file():
            return f"{file.name} is missing"
        if file.stat().st_size == 0:
            return f"{file.name} is empty"
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="np"):
                    pass
            except (SafetensorError, OSError) as error:
                return f"{file.name} is truncated or corrupt ({str(error).splitlines()[0]})"
    return None


def count_parameters(name: str) -> int | None:
    """Parameters in a model's safetensors weights (a local folder or the local hub cache); None when unknown."""
    import math

    from safetensors import safe_open

    folder = local_model_folder(name)
    if folder is None:
        return None
    files = _weight_files(folder, ("model.safetensors", "model.safetensors.index.json"))
    if isinstance(files, str) or unreadable_weights(folder):
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="np") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return total


# --- what it is --------------------------------------------------------------------------------------------


def read_checkpoint(path: str) -> dict[str, Any] | None:
    """The adapter_config.json of an adapter folder, None for a full model folder; anything else is an InputError."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"--checkpoint {path}: no such folder")
    if (folder / "adapter_config.json").is_file():
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"--checkpoint {path}: adapter_config.json cannot be read ({error})") from error
        if not isinstance(config, dict) or config.get("peft_type") != "LORA":
            raise InputError(f"--checkpoint {path}: adapter_config.json does not describe a LoRA adapter (peft_type)")
        missing = [key for key in ADAPTER_CONFIG_KEYS if not config.get(key)]
        if missing:
            raise InputError(f"--checkpoint {path}: adapter_config.json has no {', '.join(missing)}")
        problem = unreadable_weights(folder, ADAPTER_WEIGHTS)
        if problem:
            raise InputError(f"--checkpoint {path}: {problem}")
        return config
    if (folder / "config.json").is_file():
        problem = unreadable_weights(folder)
        if problem:
            raise InputError(f"--checkpoint {path}: {problem}")
        return None
    raise InputError(
        f"--checkpoint {path}: holds neither a LoRA adapter (adapter_config.json) nor a model (config.json)"
    )


def has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer_config.json").is_file()


def model_config(model: str) -> dict[str, Any] | None:
    """config.json of a local model folder or of a hub model in the local cache; None when not at hand."""
    folder = local_model_folder(model)
    return _read_json(folder / "config.json") if folder else None


# --- where it came from ------------------------------------------------------------------------------------


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
    config = model_config(model)
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
