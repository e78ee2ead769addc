"""lora_merge.py: generation with the adapter folded into the weights gives the unmerged model's output, and
every base weight is the very tensor it was afterwards."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_merge import can_merge, generate_merged, merged_lora
from tiny_model import build_causal_lm, build_tiny_tokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_model(family="qwen2", targets=TARGETS, **config):
    tokenizer = build_tiny_tokenizer(family=family)
    model = build_causal_lm(tokenizer, family=family)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, **config))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # a trained adapter: B is no longer zero
    return model.eval(), tokenizer


def base_weights(model):
    return {name: p for name, p in model.named_parameters() if "lora_" not in name}


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_merged_forward_is_the_adapters_and_the_weights_come_back_untouched(family):
    model, tokenizer = peft_model(family)
    ids = tokenizer(["What is 12 * 7 ?", "Add 3 and 4."], return_tensors="pt", padding=True)
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in base_weights(model).items()}
    with torch.no_grad():
        unmerged = model(**ids).logits
        with merged_lora(model):
            merged = model(**ids).logits
            changed = [n for n, p in base_weights(model).items() if p.data_ptr() != before[n][0]]
        plain = model.get_base_model()
        with model.disable_adapter():
            without_adapter = plain(**ids).logits
    assert len(changed) == 7 * model.config.num_hidden_layers  # every targeted projection, nothing else
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged, without_adapter, atol=1e-3)  # the adapter did change the output
    for name, parameter in base_weights(model).items():
        assert parameter.data_ptr() == before[name][0] and torch.equal(parameter, before[name][1]), name


def test_generate_merged_gives_the_same_greedy_tokens():
    model, tokenizer = peft_model()
    tokenizer.padding_side = "left"
    ids = tokenizer(["What is 12 * 7 ?", "Add 3 and 4."], return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    unmerged = model.generate(**ids, **settings)
    assert generate_merged(model)
    assert torch.equal(model.generate(**ids, **settings), unmerged)
    assert model.peft_config["default"].r == 4 and not any(layer.merged for layer in model.modules() if hasattr(layer, "merged_adapters"))


def test_merged_weights_follow_the_adapter_as_it_trains():
    model, tokenizer = peft_model()
    ids = tokenizer(["What is 12 * 7 ?"], return_tensors="pt")
    with torch.no_grad():
        for parameter in (p for n, p in model.named_parameters() if "lora_B" in n):
            parameter.mul_(-2.0)  # an optimizer step
        unmerged = model(**ids).logits
        with merged_lora(model):
            merged = model(**ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_what_cannot_merge_is_left_alone():
    assert not can_merge(build_causal_lm(build_tiny_tokenizer()))  # no adapter
    embedding, _ = peft_model(targets=["embed_tokens", "q_proj"])
    dora, _ = peft_model(use_dora=True)
    for model in (embedding, dora):
        assert not can_merge(model) and not generate_merged(model) and "generate" not in vars(model)
