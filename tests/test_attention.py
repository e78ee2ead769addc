"""attention.py: grouped-query SDPA under a padding mask gives what transformers' sdpa and eager give."""

import pytest
import torch
from helpers import build_wide_tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import attention
from attention import GQA_SDPA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def tiny(request, tmp_path_factory):
    """smoke's tiny model (4 query heads share 2 KV heads), then the tiny Llama (3 share 1, padding with its eos),
    with wide random weights: prompts give different tokens."""
    folder = build_wide_tiny_model(tmp_path_factory.mktemp(request.param) / "model", family=request.param)
    config = AutoConfig.from_pretrained(folder)
    assert config.num_attention_heads > config.num_key_value_heads  # else there are no KV heads to share
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.pad_token_id == tokenizer.eos_token_id) == (request.param == "llama")
    return folder


def load(folder, implementation):
    attention.register()
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation).eval()


def left_padded_batch(folder):
    """Three prompts of different lengths, left padded: the shorter rows start with padding the mask hides."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    texts = ["Natalia sold clips to 48 of her friends", "Weng earns $12 an hour", "Betty is saving money for a new wallet which costs $100"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the test needs a padding mask
    return batch


def greedy_settings(folder):
    """generate()'s greedy settings, finished rows padded with the tokenizer's pad (the tiny Llama's: its eos)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return dict(max_new_tokens=12, do_sample=False, **ids)


def test_loads_by_name_and_registers_once(tiny):
    assert attention.register() == attention.register() == GQA_SDPA
    assert load(tiny, GQA_SDPA).config._attn_implementation == GQA_SDPA


@pytest.mark.parametrize("reference", ["sdpa", "eager"])
def test_same_greedy_tokens_as_sdpa_and_eager_with_left_padding(tiny, reference):
    batch = left_padded_batch(tiny)
    settings = greedy_settings(tiny)
    with torch.no_grad():
        ours = load(tiny, GQA_SDPA).generate(**batch, **settings)
        theirs = load(tiny, reference).generate(**batch, **settings)
    assert torch.equal(ours, theirs)
    assert len({tuple(row) for row in ours[:, batch["input_ids"].shape[1] :].tolist()}) > 1


def test_left_padding_leaves_each_prompt_its_own_greedy_tokens(tiny):
    """Padding hidden by the mask changes nothing, also where the padding token is the eos (the tiny Llama)."""
    batch = left_padded_batch(tiny)
    settings = greedy_settings(tiny)
    model = load(tiny, GQA_SDPA)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        batched = model.generate(**batch, **settings)[:, width:].tolist()
        for row, ids, mask in zip(batched, batch["input_ids"], batch["attention_mask"]):
            alone = model.generate(input_ids=ids[mask.bool()][None], **settings)[0, mask.sum().item() :].tolist()
            # A row that stopped early is padded to the batch's length after its eos: compare up to there.
            assert row[: len(alone)] == alone


def test_same_logits_and_gradients_as_sdpa_in_a_padded_training_forward(tiny):
    """GRPO's loss forward and backward: left-padded prompts, right-padded completions."""
    batch = left_padded_batch(tiny)
    mask = torch.cat([batch["attention_mask"], torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])], dim=1)
    ids = torch.cat([batch["input_ids"], torch.full((3, 3), 5)], dim=1)
    results = []
    for implementation in (GQA_SDPA, "sdpa"):
        model = load(tiny, implementation)
        logits = model(input_ids=ids, attention_mask=mask).logits
        (logits * mask[..., None]).sum().backward()
        results.append((logits.detach(), model.model.layers[0].self_attn.k_proj.weight.grad))
    (ours, our_grad), (theirs, their_grad) = results
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    # Summation order differs (SDPA's GQA backward adds up each KV head's query heads itself): float noise only.
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-6 * their_grad.abs().max().item())


def test_keys_and_values_reach_sdpa_with_their_own_head_count(monkeypatch):
    """The point of the function: SDPA gets the 2 KV heads as they are (enable_gqa), not copied out to 4."""
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, **kwargs):
        seen.append((key.shape[1], kwargs.get("enable_gqa")))
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    query, key = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    mask[0, :, :, :2] = False  # left padding in the first row
    output, _ = attention.sdpa_gqa_attention_forward(torch.nn.Module(), query, key, key.clone(), mask, scaling=0.5)
    assert seen == [(2, True)]
    expected = sdpa(query, key.repeat_interleave(2, dim=1), key.repeat_interleave(2, dim=1), attn_mask=mask, scale=0.5)
    torch.testing.assert_close(output, expected.transpose(1, 2))


def test_other_devices_get_transformers_own_sdpa(monkeypatch):
    """Off the CPU (here: shapes only, on the meta device) masked GQA is left to transformers' sdpa, which copies."""
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, **kwargs):
        seen.append((key.shape[1], kwargs.get("enable_gqa", False)))
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    query, key = torch.empty(2, 4, 3, 8, device="meta"), torch.empty(2, 2, 5, 8, device="meta")
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool, device="meta")
    output, _ = attention.sdpa_gqa_attention_forward(module, query, key, key, mask)
    assert seen == [(4, False)] and output.shape == (2, 3, 4, 8)


def test_train_loads_the_hf_backend_model_with_it(tiny, tmp_path):
    import backends
    import train

    script_args, training_args, _, _ = train.parse_args(
        ["--smoke", "--model_name_or_path", str(tiny), "--output_dir", str(tmp_path)]
    )
    assert script_args.attn_implementation == GQA_SDPA
    model, _, _ = backends.load_hf(script_args, training_args)
    assert model.config._attn_implementation == GQA_SDPA
    script_args.attn_implementation = "sdpa"  # the way back to transformers' own
    assert backends.load_hf(script_args, training_args)[0].config._attn_implementation == "sdpa"


def test_continuous_batching_gets_transformers_sdpa(tiny, tmp_path):
    """trl's use_transformers_continuous_batching switches the model to "paged|<attention>": only sdpa has one."""
    import backends
    import train

    script_args, training_args, _, _ = train.parse_args(
        ["--smoke", "--model_name_or_path", str(tiny), "--output_dir", str(tmp_path)]
        + ["--use_transformers_continuous_batching", "true"]
    )
    assert backends.load_hf(script_args, training_args)[0].config._attn_implementation == "sdpa"
