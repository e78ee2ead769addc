"""A real pretrained model through every command: SmolLM2-135M-Instruct (fetch_model.py) on real GSM8K.

sft.py (LoRA) -> train.py from its merged model -> evaluate.py on the adapter with both engines, and on the GRPO
run's merged model, at the smallest sizes that still run the real paths: a real tokenizer's special tokens, its
chat template, real problems. What the model learns is measured by bench/real_model.py, not here.
"""

import json
import os

import pytest

from machine import is_installed
from helpers import run_script

PROBLEMS = 4
MAX_NEW_TOKENS = 32
SMALL_RUN = (
    "--max_steps", 1, "--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 1, "--lora_r", 8,
    "--lora_alpha", 16, "--use_cpu", "true", "--logging_steps", 1, "--save_steps", 100, "--max_samples", 4,
)  # fmt: skip


@pytest.fixture(scope="module")
def sft_run(real_model, gsm8k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "sft"
    done = run_script(
        "sft.py", "--model_name_or_path", real_model, "--dataset_name", gsm8k_dir, "--output_dir", out,
        "--eval_holdout", 4, "--max_length", 384, *SMALL_RUN, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def grpo_run(sft_run, gsm8k_dir):
    out = sft_run.parent / "grpo"
    done = run_script(
        "train.py", "--model_name_or_path", sft_run / "merged", "--dataset_name", gsm8k_dir, "--output_dir", out,
        "--eval_holdout", 0, "--num_generations", 2, "--max_completion_length", 16, "--save_merged", "true",
        *SMALL_RUN, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def evaluate(out, *args):
    done = run_script(
        "evaluate.py", "--split", "test", "--limit", PROBLEMS, "--max_new_tokens", MAX_NEW_TOKENS,
        "--output_dir", out, *args, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = {
        label: [json.loads(line) for line in (out / f"{label}.jsonl").read_text().splitlines()]
        for label in ("base", "tuned")
    }
    return records, json.loads((out / "summary.json").read_text()), done.stderr


def test_sft_trains_and_writes_an_adapter_and_a_merged_model(sft_run, real_model):
    from transformers import AutoTokenizer

    steps = [json.loads(line) for line in (sft_run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 1 and steps[0]["loss"] > 0
    assert (sft_run / "adapter_model.safetensors").is_file() and (sft_run / "merged" / "model.safetensors").is_file()
    for folder in (sft_run, sft_run / "merged"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    adapter = json.loads((sft_run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(real_model)


def test_grpo_runs_a_step_from_the_sft_model(grpo_run):
    config = json.loads((grpo_run / "run_config.json").read_text())
    assert config["script"]["model_name_or_path"].endswith("sft/merged")
    steps = [json.loads(line) for line in (grpo_run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 1 and 0 < steps[0]["completions/mean_length"] <= 16
    assert list((grpo_run / "completions").glob("*.parquet"))
    assert (grpo_run / "adapter_model.safetensors").is_file() and (grpo_run / "merged" / "config.json").is_file()


@pytest.mark.skipif(not is_installed("vllm") and not os.environ.get("CI"), reason="vllm is not installed")
def test_both_engines_give_the_same_tokens_on_real_text(sft_run, gsm8k_dir):
    """The base model and the SFT adapter (LoRARequest on vLLM's engine, merged into the weights on transformers)."""
    from test_vllm import assert_same_greedy_tokens

    folder = sft_run.parent
    vllm, _, _ = evaluate(folder / "eval-vllm", "--checkpoint", sft_run, "--dataset_name", gsm8k_dir, "--backend", "vllm")
    hf, summary, _ = evaluate(folder / "eval-hf", "--checkpoint", sft_run, "--dataset_name", gsm8k_dir, "--backend", "hf")
    for label in ("base", "tuned"):
        assert len(vllm[label]) == PROBLEMS
        assert_same_greedy_tokens(summary["settings"]["base_model"], sft_run if label == "tuned" else None,
                                  vllm[label], hf[label])  # fmt: skip


def test_grpo_merged_model_is_scored_against_the_sft_model_it_started_from(grpo_run, sft_run, gsm8k_dir):
    records, summary, _ = evaluate(
        grpo_run / "eval-merged", "--checkpoint", grpo_run / "merged", "--dataset_name", gsm8k_dir, "--backend", "hf"
    )
    assert summary["settings"]["base_model"] == str((sft_run / "merged").resolve())
    assert [len(records[label]) for label in ("base", "tuned")] == [PROBLEMS, PROBLEMS]
    assert all(r["tokens"] <= MAX_NEW_TOKENS for r in records["tuned"])
