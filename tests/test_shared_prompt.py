"""shared_prompt.py: GRPO's rollout batch reads the system prompt once and each prompt once, with the same tokens."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from attention import register
from data import SAMPLE_DATA_DIR
from prompts import build_messages
from generation import shared_prefix_length
from shared_prompt import generate_reading_prompts_once, layout
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


# --- the loss's forward pass ----------------------------------------------------------------------------------


def fused_lora_model(folder):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=register())
    add_fused_lm_head(model, temperature=0.9, outputs=("log_probs", "entropy"))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: A's gradients are not zero
            torch.nn.init.normal_(parameter, std=0.05)
    return model


def loss_pass(model, input_ids, attention_mask, labels):
    """(log-probs, entropy, LoRA gradients, tokens the backbone read) of one fused forward and backward pass."""
    read = []
    embed = model.get_base_model().model.embed_tokens
    hook = embed.register_forward_hook(lambda module, args, out: read.append(args[0].numel()))
    try:
        model.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() + 0.1 * out.entropy.sum()).backward()
    finally:
        hook.remove()
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.log_probs.detach(), out.entropy.detach(), gradients, sum(read)


def assert_same_pass(plain, once):
    scored = plain[0] != 0
    torch.testing.assert_close(once[0][scored], plain[0][scored], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(once[1][scored], plain[1][scored], rtol=1e-4, atol=1e-5)
    assert plain[2].keys() == once[2].keys()
    for name, gradient in plain[2].items():  # float32 rounding of sums taken in another order
        assert (once[2][name] - gradient).abs().max() <= 1e-5 * gradient.abs().max(), name


def grpo_batch(tokenizer, vocab_size, completion_lengths=(5, 9, 3, 7)):
    """trl's loss inputs for a GRPO step: GROUP left-padded copies of each prompt, then right-padded completions."""
    prompts = rollout_batch(tokenizer, questions(SAMPLE_DATA_DIR / "train.jsonl", 2))
    rows = len(prompts["input_ids"])
    width = max(completion_lengths)
    completions = torch.randint(5, vocab_size, (rows, width), generator=torch.Generator().manual_seed(2))
    completion_mask = torch.tensor([[1] * n + [0] * (width - n) for n in completion_lengths * (rows // len(completion_lengths))])
    input_ids = torch.cat([prompts["input_ids"], completions], dim=1)
    attention_mask = torch.cat([prompts["attention_mask"], completion_mask], dim=1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, : prompts["input_ids"].shape[1]] = -100
    return input_ids, attention_mask, labels


def test_grpo_loss_pass_reads_each_group_s_prompt_once_with_the_same_values_and_gradients(tmp_path):
    from shared_prompt import train_reading_prompts_once

    folder = build_tiny_model(tmp_path / "tiny")
    model, tokenizer = fused_lora_model(folder), load(folder)[1]
    batch = grpo_batch(tokenizer, model.config.vocab_size)
    plain = loss_pass(model, *batch)
    assert train_reading_prompts_once(model)
    once = loss_pass(model, *batch)
    assert_same_pass(plain, once)
    rows, width = batch[0].shape
    prompt_width = int((batch[2] != -100).any(0).nonzero()[0])
    assert plain[3] == rows * width
    assert once[3] == 2 * prompt_width + rows * (width - prompt_width)  # 2 distinct prompts, then every completion


def test_sft_loss_pass_reads_the_shared_system_prompt_once(tmp_path):
    from shared_prompt import train_reading_prompts_once

    folder = build_tiny_model(tmp_path / "tiny")
    model, tokenizer = fused_lora_model(folder), load(folder)[1]
    tokenizer.padding_side = "right"
    texts = [tokenizer.apply_chat_template(build_messages(q), add_generation_prompt=True, tokenize=False) + " answer " * (i + 1)
             for i, q in enumerate(questions(SAMPLE_DATA_DIR / "train.jsonl", 3))]  # fmt: skip
    prompt_lengths = [len(tokenizer.apply_chat_template(build_messages(q), add_generation_prompt=True, return_dict=False))
                      for q in questions(SAMPLE_DATA_DIR / "train.jsonl", 3)]  # fmt: skip
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for row, length in enumerate(prompt_lengths):
        labels[row, :length] = -100
    plain = loss_pass(model, enc["input_ids"], enc["attention_mask"], labels)
    assert train_reading_prompts_once(model)
    once = loss_pass(model, enc["input_ids"], enc["attention_mask"], labels)
    assert_same_pass(plain, once)
    assert once[3] < plain[3]


def indexing_backward_nodes(tensor):
    """How many backward nodes of advanced indexing (`x[rows]`: index_put_ with accumulate) lead to `tensor`."""
    seen, stack, found = set(), [tensor.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        found += type(node).__name__ == "IndexBackward0"
        stack.extend(parent for parent, _ in node.next_functions)
    return found


def test_grpo_loss_pass_gives_the_same_gradients_every_time(tmp_path):
    """Copying a prompt's keys, values and hidden states to its rows by indexing (`keys[which]`) made the step's
    gradients differ in their last bits from run to run: on the CPU that backward adds a prompt's copies with atomic
    adds from several threads, in no fixed order. Copied with index_select, they are added in order."""
    from shared_prompt import train_reading_prompts_once

    folder = build_tiny_model(tmp_path / "tiny")
    model, tokenizer = fused_lora_model(folder), load(folder)[1]
    # 2 prompts x 16 rows, shuffled as trl shuffles a step's batch: large enough for the kernels' parallel paths.
    input_ids, attention_mask, labels = (torch.cat([t] * 4) for t in grpo_batch(tokenizer, model.config.vocab_size))
    order = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(0))
    batch = input_ids[order], attention_mask[order], labels[order]
    plain_out = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2], fused_lm_head=True)
    assert train_reading_prompts_once(model)
    once_out = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2], fused_lm_head=True)
    assert indexing_backward_nodes(once_out.log_probs) == indexing_backward_nodes(plain_out.log_probs)
    first = loss_pass(model, *batch)[2]
    for _ in range(4):
        again = loss_pass(model, *batch)[2]
        assert all(torch.equal(again[name], gradient) for name, gradient in first.items())
