"""Model loading for training: Unsloth + vLLM on a CUDA GPU, transformers + PEFT everywhere else.

Both return `(model, tokenizer, peft_config)` ready for GRPOTrainer:
- `unsloth`: the blog's path. FastLanguageModel loads the model with an in-process vLLM engine
  (fast_inference; without it Unsloth generates on its own) and adds LoRA itself, so peft_config is None (a
  PeftModel plus peft_config is an error in trl). Importing unsloth patches trl's GRPOTrainer, which then
  generates with that engine.
- `hf`: a transformers model plus a LoRA `peft_config` that GRPOTrainer applies; generation through
  trl's colocated vLLM when it is available, plain `generate` otherwise.
Heavy imports live inside the functions: nothing here loads torch until a backend is used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from data import is_local_source

BACKENDS = ("auto", "unsloth", "hf")


class BackendError(RuntimeError):
    """The requested backend cannot run on this machine (one-line message)."""


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU."""
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """True when the GPU can train in bf16 (Ampere and newer)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def is_installed(package: str) -> bool:
    """True when `package` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # already imported without a spec (a stand-in module)
        return True


# Weight files in the order transformers / peft look for them; a sharded model has an index naming its shards.
MODEL_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _weight_files(folder: Path, names: tuple[str, ...]) -> list[Path] | str:
    """The weight files of `folder` (the shards an index names), or why there are none."""
    import json

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


def choose_training_backend(requested: str, cpu_only: bool = False) -> tuple[str, str]:
    """Pick the training backend; returns (name, why). Asking for an impossible one is a BackendError."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend '{requested}'; choose from: {', '.join(BACKENDS)}")
    has_cuda = cuda_available()
    has_unsloth = is_installed("unsloth")
    if requested == "unsloth":
        if not has_cuda or cpu_only:
            raise BackendError("backend 'unsloth' needs a CUDA GPU, and torch sees none or --use_cpu is set (use --backend hf)")
        if not has_unsloth:
            raise BackendError("backend 'unsloth' needs unsloth: pip install -r requirements.txt")
        return "unsloth", "requested with --backend unsloth"
    if requested == "hf":
        return "hf", "requested with --backend hf"
    if cpu_only:
        return "hf", "CPU run (--use_cpu, or --smoke)"
    if has_cuda and has_unsloth:
        return "unsloth", "CUDA GPU and unsloth found" + ("" if is_installed("vllm") else ", vllm not installed")
    if not has_cuda:
        return "hf", "no CUDA GPU: transformers + PEFT"
    return "hf", "unsloth is not installed: transformers + PEFT"


def load_unsloth(script_args: Any, training_args: Any) -> tuple[Any, Any, None]:
    """The blog's model: FastLanguageModel with vLLM fast inference (unless turned off), then Unsloth's LoRA."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=script_args.model_name_or_path,
        # The model the user named: Unsloth would otherwise swap in its own hub copy (unsloth/...), a second
        # download whose name the saved adapter would then carry.
        use_exact_model_name=True,
        max_seq_length=script_args.max_seq_length,
        load_in_4bit=script_args.load_in_4bit,
        fast_inference=script_args.fast_inference,
        max_lora_rank=script_args.lora_r,
        gpu_memory_utilization=script_args.gpu_memory_utilization,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=script_args.lora_r,
        target_modules=list(script_args.lora_target_modules),
        lora_alpha=script_args.lora_alpha,
        use_gradient_checkpointing="unsloth",
        random_state=training_args.seed,
    )
    return model, tokenizer, None


def lora_config(script_args):
    """The LoRA adapter of the recipe: rank, alpha and target modules from the script's options, no dropout."""
    from peft import LoraConfig

    return LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        target_modules=list(script_args.lora_target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_hf(script_args: Any, training_args: Any) -> tuple[Any, Any, Any]:
    """A transformers model (optionally 4-bit) and the LoRA config GRPOTrainer will apply."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attention import GQA_SDPA, register

    register()  # attention.GQA_SDPA: grouped-query SDPA that keeps the KV heads shared under a padding mask
    attn_implementation = script_args.attn_implementation
    if attn_implementation == GQA_SDPA and getattr(training_args, "use_transformers_continuous_batching", False):
        # Continuous batching switches the model to "paged|<its attention>", which transformers has for sdpa.
        attn_implementation = "sdpa"
    model_kwargs: dict[str, Any] = {
        "dtype": torch.bfloat16 if training_args.bf16 else torch.float32,
        "attn_implementation": attn_implementation,
    }
    if script_args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=model_kwargs["dtype"]
        )
        model_kwargs["device_map"] = {"": 0}
    # The Trainer moves an unquantized model to the training device itself.
    model = AutoModelForCausalLM.from_pretrained(script_args.model_name_or_path, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    return model, tokenizer, lora_config(script_args)


def load_model(backend: str, script_args: Any, training_args: Any) -> tuple[Any, Any, Any]:
    """Load (model, tokenizer, peft_config) with the resolved backend."""
    from generation import stop_token_ids

    loader = load_unsloth if backend == "unsloth" else load_hf
    model, tokenizer, peft_config = loader(script_args, training_args)
    # trl ends a completion at the tokenizer's eos and the generation_config's ids; a model whose config names
    # only <|endoftext|> would otherwise sample past the chat template's end of turn (<|im_end|>) and train on it.
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, model)
    return model, tokenizer, peft_config
