"""Model loading for training: Unsloth + vLLM on a CUDA GPU, transformers + PEFT everywhere else.

Both return `(model, tokenizer, peft_config)` ready for GRPOTrainer:
- `unsloth`: the blog's path. FastLanguageModel loads the model with an in-process vLLM engine
  (fast_inference; without it Unsloth generates on its own) and adds LoRA itself, so peft_config is None (a
  PeftModel plus peft_config is an error in trl). Importing unsloth patches trl's GRPOTrainer, which then
  generates with that engine.
- `hf`: a transformers model plus a LoRA `peft_config` that GRPOTrainer applies; generation through
  trl's colocated vLLM when it is available, plain `generate` otherwise.
Where a model is and what it is (folder, hub cache, weights, adapter or full model) is models.py's; what the
machine has (CUDA, bf16, installed packages) is machine.py's. Heavy imports live inside the functions: nothing
here loads torch until a backend is used.
"""

from __future__ import annotations

from typing import Any

from machine import cuda_available, is_installed

BACKENDS = ("auto", "unsloth", "hf")


class BackendError(RuntimeError):
    """The requested backend cannot run on this machine (one-line message)."""


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
