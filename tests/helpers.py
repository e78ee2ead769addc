"""Shared test helpers: run the repo's scripts the way a user does."""

import contextlib
import io
import os
import runpy
import subprocess
import sys

from conftest import REPO


def run_script(script: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python SCRIPT ARGS...` from the repo root, offline; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def smoke_error_line(script: str, output_dir, *args: str, message: str) -> str:
    """Run `python SCRIPT --smoke --output_dir OUTPUT_DIR ARGS...`, which must exit with code 2 and end its stderr
    with one error line that contains `message`; returns that line.

    The script runs as its own `__main__` (runpy, from the repo root, with that sys.argv) inside this process:
    what a new process would run, less the ~5 s it spends importing torch and trl again. tests/test_checks.py
    runs the same refusals in a process of their own.
    """
    argv = [str(REPO / script), "--smoke", "--output_dir", str(output_dir), *map(str, args)]
    stderr = io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv, code = argv, 0
    os.chdir(REPO)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    assert code == 2 and lines and message in lines[-1], (code, stderr.getvalue()[-2000:])
    return lines[-1]


# The smallest shape vLLM's CPU attention takes: head size 64 (smoke's tiny model has 16), grouped-query like Qwen.
VLLM_TINY_SHAPE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1)


def build_wide_tiny_model(folder, family: str = "qwen2", **shape):
    """smoke's tiny model, or tiny_model's Llama for `family="llama"` (`shape` changes its sizes), with its
    matrices redrawn wide (std 0.3), so that every prompt gets its own completion.

    With smoke's own init (std 0.02) greedy decoding prints newlines only: every prompt gives the same
    completion, and batching, attention or an adapter would have nothing to change.
    """
    import torch
    from transformers import AutoModelForCausalLM

    import tiny_model

    if shape:
        tokenizer = tiny_model.build_tiny_tokenizer(family=family)
        full_shape = {**tiny_model.FAMILIES[family].shape, **shape}
        tiny_model.build_causal_lm(tokenizer, full_shape, family=family).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    else:
        folder = tiny_model.build_tiny_model(folder, family=family)
    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.3, generator=generator)
    model.save_pretrained(folder)
    return folder


def write_random_adapter(model_dir, folder, target_modules, std: float):
    """A LoRA adapter (r=8, alpha 16) on `model_dir`, lora_B drawn at random (std `std`) so that it changes
    outputs, saved with the model's tokenizer as train.py saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, std, generator=generator)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder
