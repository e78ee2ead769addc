"""cpu_decode.py: packed weights give the same greedy tokens and come off again; sampling by cumulative sums draws
the distribution torch.multinomial draws; train.py's rollouts decode through both on the CPU."""

import pytest
import torch

from cpu_decode import (
    can_pack,
    cumulative_sampling,
    fast_cpu_generation,
    grouped_query_attention,
    packed_linears,
    sample_from_cumulative,
)
from lora_merge import generate_merged
from tests.test_lora_merge import peft_model
from tiny_model import build_causal_lm, build_tiny_tokenizer

pytestmark = pytest.mark.skipif(not can_pack(torch.nn.Linear(2, 2)), reason="this torch has no oneDNN packed linear")


def prompts(tokenizer):
    tokenizer.padding_side = "left"
    return tokenizer(["What is 12 * 7 ?", "Add 3 and 4, then take away 2."], return_tensors="pt", padding=True)


def linears(model):
    return [module for module in model.modules() if isinstance(module, torch.nn.Linear)]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_packed_weights_give_the_same_greedy_tokens_and_come_off_again(family):
    tokenizer = build_tiny_tokenizer(family=family)
    model = build_causal_lm(tokenizer, family=family).eval()
    ids = prompts(tokenizer)
    settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    plain = model.generate(**ids, **settings)
    with packed_linears(model, rows=2) as count:
        assert count == len(linears(model)) and all("forward" in vars(m) for m in linears(model))
        packed = model.generate(**ids, **settings)
    assert torch.equal(packed, plain)
    assert not any("forward" in vars(m) for m in linears(model))  # each layer's own forward again


def test_packed_copies_are_taken_when_the_context_opens():
    layer = torch.nn.Linear(16, 8)
    inputs = torch.randn(3, 5, 16)
    with torch.no_grad():
        with packed_linears(layer, rows=3):
            torch.testing.assert_close(layer(inputs), torch.nn.functional.linear(inputs, layer.weight, layer.bias))
        layer.weight.mul_(-2.0)  # an optimizer step between two generate calls
        with packed_linears(layer, rows=3):
            torch.testing.assert_close(layer(inputs), torch.nn.functional.linear(inputs, layer.weight, layer.bias))


def key_value_copies(monkeypatch):
    """A list that grows by one each time transformers copies keys or values per query head group."""
    import transformers.integrations.sdpa_attention as sdpa

    copies, repeat_kv = [], sdpa.repeat_kv
    monkeypatch.setattr(sdpa, "repeat_kv", lambda states, groups: copies.append(groups) or repeat_kv(states, groups))
    return copies


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_padded_prompts_attend_without_copying_keys_per_head_group(family, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    tokenizer = build_tiny_tokenizer(family=family)
    model = build_causal_lm(tokenizer, family=family).eval()
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped-query attention
    ids = prompts(tokenizer)
    assert not ids["attention_mask"].all()  # padded: transformers passes SDPA a mask
    settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    copies = key_value_copies(monkeypatch)
    plain = model.generate(**ids, **settings)
    assert copies  # as transformers comes: keys and values copied per group at every step
    copies.clear()
    with grouped_query_attention():
        grouped = model.generate(**ids, **settings)
    assert torch.equal(grouped, plain) and not copies
    assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping  # transformers' own attention again
    model.generate(**ids, **settings)
    assert copies


def test_sampling_by_cumulative_sums_draws_the_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 0.0, 2.0, 0.0]])
    torch.manual_seed(0)
    draws = torch.cat([sample_from_cumulative(probs) for _ in range(20000)], dim=1)  # 3 rows x 20000 draws
    assert draws.shape == (3, 20000) and draws.dtype == torch.int64
    frequencies = torch.stack([torch.bincount(row, minlength=5) for row in draws]).float() / 20000
    expected = probs / probs.sum(-1, keepdim=True)  # rows need not sum to 1, as with torch.multinomial
    assert torch.allclose(frequencies, expected, atol=0.015)  # 4.5 standard errors of the largest variance
    assert not frequencies[expected == 0].any()  # an entry of probability 0 is never drawn
    torch.manual_seed(0)
    again = torch.cat([sample_from_cumulative(probs) for _ in range(20000)], dim=1)
    assert torch.equal(again, draws)  # seeded like every other torch draw


def test_a_threshold_at_the_very_total_lands_on_the_last_entry_with_probability(monkeypatch):
    probs = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.ones(shape, dtype=kwargs.get("dtype")))  # u = 1
    assert sample_from_cumulative(probs).item() == 1


def test_cumulative_sampling_only_takes_single_draws_and_puts_multinomial_back():
    original = torch.multinomial
    probs = torch.tensor([[0.5, 0.5, 0.0]])
    with pytest.raises(RuntimeError), cumulative_sampling():
        assert torch.multinomial is not original
        assert torch.multinomial(probs, 2).shape == (1, 2)  # two draws: torch's own
        raise RuntimeError("a failing generate call")
    assert torch.multinomial is original


def test_fast_generation_wraps_only_what_can_pack():
    tokenizer = build_tiny_tokenizer()
    model = build_causal_lm(tokenizer, dtype=torch.bfloat16)
    seen = []
    generate = fast_cpu_generation(model, lambda *a, **k: seen.append(torch.multinomial) or "done")
    assert generate(torch.zeros(2, 3, dtype=torch.long)) == "done"
    assert seen == [torch.multinomial]  # bfloat16 weights: nothing packed, torch's own sampling


def test_rollouts_decode_packed_with_cumulative_sampling_on_the_cpu(monkeypatch):
    model, tokenizer = peft_model()
    copies = key_value_copies(monkeypatch)
    ids = prompts(tokenizer)
    during = []
    head = model.get_output_embeddings()
    head.register_forward_pre_hook(lambda module, args: during.append(("forward" in vars(module), torch.multinomial)))
    settings = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": True, "temperature": 0.8}
    settings["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(3)
    unmerged = model.generate(**ids, **settings)
    assert during and not any(packed for packed, _ in during)  # as the model comes: neither
    assert generate_merged(model)
    during.clear()
    copies.clear()
    torch.manual_seed(3)
    rollouts = model.generate(**ids, **settings)
    assert during and all(packed and sampler is not torch.multinomial for packed, sampler in during)
    assert not copies  # grouped-query attention in SDPA
    torch.manual_seed(3)
    assert torch.equal(model.generate(**ids, **settings), rollouts) and rollouts.shape == unmerged.shape  # seeded
    assert not any("forward" in vars(m) for m in linears(model))
