"""shared_prompt.py: GRPO's rollout batch reads the system prompt once and each prompt once, with the same tokens."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from attention import register
from data import SAMPLE_DATA_DIR
from prompts import build_messages
from shared_prompt import generate_reading_prompts_once, layout, shared_prefix_length
from tiny_model import build_tiny_model

GROUP = 4  # completions per prompt, as trl lays out a GRPO step: each prompt GROUP times in a row


def load(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=register()).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def rollout_batch(tokenizer, questions):
    """trl's generate inputs for a GRPO step: each chat prompt GROUP times, left padded."""
    texts = [tokenizer.apply_chat_template(build_messages(q), add_generation_prompt=True, tokenize=False)
             for q in questions for _ in range(GROUP)]  # fmt: skip
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def generate_both_ways(model, tokenizer, inputs, config, seed=0):
    """(completions of plain generate, completions with the prompts read once, prompt tokens read by each)."""
    read = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: read.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        torch.manual_seed(seed)
        plain = model.generate(**inputs, generation_config=config)
        plain_read, read[:] = read[0], []
        generate_reading_prompts_once(model, tokenizer.pad_token_id)
        torch.manual_seed(seed)
        once = model.generate(**inputs, generation_config=config)
        once_read = sum(read[: len(read) - config.max_new_tokens + 1])  # the calls before the decoding steps
    finally:
        hook.remove()
        del model.generate
    width = inputs["input_ids"].shape[1]
    return plain[:, width:], once[:, width:], plain_read, once_read


def questions(path, count):
    return [json.loads(line)["question"] for line in open(path)][:count]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.mark.parametrize("sample", [False, True])
def test_tiny_model_same_tokens_greedy_and_sampled_with_one_seed(tiny, sample):
    model, tokenizer = tiny
    inputs = rollout_batch(tokenizer, questions(SAMPLE_DATA_DIR / "train.jsonl", 3))
    config = GenerationConfig(max_new_tokens=12, min_new_tokens=12, do_sample=sample, temperature=0.9, top_k=0,
                              pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    plain, once, plain_read, once_read = generate_both_ways(model, tokenizer, inputs, config)
    assert torch.equal(plain, once)
    rows = [ids[m.bool()].tolist() for ids, m in zip(inputs["input_ids"], inputs["attention_mask"])]
    prefix = shared_prefix_length(rows)
    distinct = {tuple(row) for row in rows}
    # The first call reads the whole padded batch; now: the prefix once, each distinct prompt's own tokens once
    # (padded to the widest), then each row's last prompt token.
    assert plain_read == inputs["input_ids"].numel()
    assert once_read <= prefix + len(distinct) * (inputs["input_ids"].shape[1] - 1 - prefix) + len(rows)
    assert once_read < plain_read / 2


def test_real_model_same_greedy_tokens_on_gsm8k_groups(real_model, gsm8k_dir):
    model, tokenizer = load(real_model)
    inputs = rollout_batch(tokenizer, questions(gsm8k_dir / "test.jsonl", 3))
    config = GenerationConfig(max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    plain, once, plain_read, once_read = generate_both_ways(model, tokenizer, inputs, config)
    assert torch.equal(plain, once)
    assert once_read < plain_read / 2


def test_layout_keeps_the_prefix_left_and_each_row_s_own_tokens_right():
    ids, mask = layout([[1, 2, 3, 4], [1, 2, 5]], prefix=2, width=5, pad_id=0)
    assert ids == [[1, 2, 0, 3, 4], [1, 2, 0, 0, 5]]
    assert mask == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1]]


def test_smoke_run_generates_its_rollouts_this_way(smoke_run):
    assert "generation: the shared system prompt and each distinct prompt run through the model once" in (
        smoke_run.parent / "stdout.txt"
    ).read_text()
