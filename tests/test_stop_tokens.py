"""An answer ends at the chat template's end of turn, whatever the tokenizer's eos and the generation_config say.

The model here is built to close its turn at once: its layers add nothing (o_proj and down_proj are zero), so the
next token depends on the last one alone, and <|im_end|>'s embedding is a multiple of the generation prompt's last
token's, so greedy decoding and sampling both pick <|im_end|> first. Its tokenizer and generation_config name
<|endoftext|> as eos, as Qwen2.5's base model does; an adapter from SFT with `eos_token: <|im_end|>` names <|im_end|>.
"""

import json
import os

import pytest

from machine import is_installed
from helpers import VLLM_TINY_SHAPE, run_script, write_random_adapter

MAX_NEW_TOKENS = 12


def build_turn_closing_model(folder):
    """A tiny Qwen2 (head size 64, as vLLM's CPU build needs) that answers <|im_end|> first; eos <|endoftext|>."""
    import torch

    import tiny_model
    from prompts import build_messages

    tokenizer = tiny_model.build_tiny_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    model = tiny_model.build_qwen2_model(tokenizer, {**tiny_model.TINY_SHAPE, **VLLM_TINY_SHAPE})
    prompt = tokenizer.apply_chat_template(build_messages("How many?"), add_generation_prompt=True, tokenize=False)
    last = tokenizer(prompt, add_special_tokens=False).input_ids[-1]
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings[end_of_turn] = 5 * embeddings[last]
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def turn_closer(tmp_path_factory):
    return build_turn_closing_model(tmp_path_factory.mktemp("stop") / "model")


@pytest.fixture(scope="module")
def im_end_adapter(turn_closer, tmp_path_factory):
    """A LoRA adapter that changes nothing (lora_B zero) saved with a tokenizer whose eos is <|im_end|>."""
    from transformers import AutoTokenizer

    folder = write_random_adapter(turn_closer, tmp_path_factory.mktemp("stop") / "adapter", ["q_proj", "v_proj"], 0.0)
    tokenizer = AutoTokenizer.from_pretrained(turn_closer)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.save_pretrained(folder)
    return folder


def evaluate(engine, out, *args):
    from data import SAMPLE_DATA_DIR

    done = run_script(
        "evaluate.py", "--backend", engine, "--dataset_name", SAMPLE_DATA_DIR, "--split", "test", "--limit", 4,
        "--max_new_tokens", MAX_NEW_TOKENS, "--output_dir", out, *args, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        label: [json.loads(line) for line in (out / f"{label}.jsonl").read_text().splitlines()]
        for label in ("base", "tuned")
        if (out / f"{label}.jsonl").is_file()
    }


def test_end_of_turn_is_a_stop_token_beside_eos(turn_closer):
    from transformers import AutoModelForCausalLM

    from generation import end_of_turn_id, load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(str(turn_closer))
    model = AutoModelForCausalLM.from_pretrained(turn_closer)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tokenizer) == end_of_turn
    assert stop_token_ids(tokenizer, model) == [tokenizer.eos_token_id, end_of_turn]


def test_transformers_path_stops_at_the_end_of_turn_the_config_does_not_name(turn_closer, tmp_path):
    records = evaluate("hf", tmp_path / "hf", "--base_model", turn_closer)
    assert [(r["tokens"], r["cut_off"]) for r in records["base"]] == [(1, False)] * 4


def test_grpo_completions_end_at_the_end_of_turn(turn_closer, tmp_path):
    """trl stops at the tokenizer's eos and the generation_config's: without the turn's end, every completion
    ran to max_completion_length and GRPO trained on what followed <|im_end|>."""
    out = tmp_path / "run"
    done = run_script(
        "train.py", "--smoke", "--model_name_or_path", turn_closer, "--output_dir", out, "--max_steps", 1,
        "--max_completion_length", MAX_NEW_TOKENS, "--eval_holdout", 0, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [step] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert step["completions/clipped_ratio"] == 0 and step["completions/max_length"] == 1


@pytest.mark.skipif(not is_installed("vllm") and not os.environ.get("CI"), reason="vllm is not installed")
def test_vllm_stops_an_adapter_at_its_own_tokenizer_s_eos(turn_closer, im_end_adapter, tmp_path):
    """The adapter runs on the base model's engine, whose tokenizer's eos is <|endoftext|>: without the adapter's
    own stop ids vLLM ran on past <|im_end|> while the transformers path stopped."""
    vllm = evaluate("vllm", tmp_path / "vllm", "--checkpoint", im_end_adapter, "--base_model", turn_closer)
    hf = evaluate("hf", tmp_path / "hf", "--checkpoint", im_end_adapter, "--base_model", turn_closer)
    for label in ("base", "tuned"):
        assert [(r["tokens"], r["cut_off"]) for r in vllm[label]] == [(1, False)] * 4
        assert [r["token_ids"] for r in vllm[label]] == [r["token_ids"] for r in hf[label]]
