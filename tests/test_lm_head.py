"""lm_head.py: on the CPU trl's fused LM head projects only labelled positions, with the same values bit for bit."""

import pytest
import torch
import trl.trainer.utils as trl_utils
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from trl.trainer.utils import add_fused_lm_head

from lm_head import score_labelled_positions_only
from tiny_model import build_tiny_model

PROMPT, COMPLETION = 40, 12


@pytest.fixture(autouse=True)
def trl_as_shipped(monkeypatch):
    """trl's own decision, whatever an earlier test in this process (train.main, sft.main) changed; restored after."""
    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "original", trl_utils._use_triton))


@pytest.fixture
def fused_model(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "tiny"), dtype=torch.float32)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: its A weights get gradients too
            torch.nn.init.normal_(parameter, std=0.02)
    return model


def scored_rows_and_outputs(model, monkeypatch):
    """(hidden rows the LM head projected, log-probs, entropy, LoRA gradients) of one fused forward and backward."""
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def recording_apply(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", recording_apply)
    ids = torch.randint(0, model.config.vocab_size, (3, PROMPT + COMPLETION), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + out.entropy.sum()).backward()
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return rows[0], out.log_probs.detach(), out.entropy.detach(), gradients


def test_only_labelled_positions_are_projected_with_the_same_values_and_gradients(fused_model, monkeypatch):
    every_rows, log_probs, entropy, gradients = scored_rows_and_outputs(fused_model, monkeypatch)
    assert score_labelled_positions_only()
    rows, compact_log_probs, compact_entropy, compact_gradients = scored_rows_and_outputs(fused_model, monkeypatch)
    assert every_rows == 3 * (PROMPT + COMPLETION - 1)  # trl's own CPU path: every position, the prompt's too
    assert rows == 3 * COMPLETION  # the positions whose next token is a completion token
    assert torch.equal(compact_log_probs, log_probs) and torch.equal(compact_entropy, entropy)
    assert gradients.keys() == compact_gradients.keys() and any(g.abs().max() > 0 for g in gradients.values())
    for name, gradient in gradients.items():
        torch.testing.assert_close(compact_gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_applying_twice_wraps_once():
    original = trl_utils._use_triton
    score_labelled_positions_only()
    score_labelled_positions_only()
    assert trl_utils._use_triton.original is original
    assert trl_utils._use_triton(torch.device("cpu")) and not original(torch.device("cpu"))


def test_another_trl_is_left_alone(monkeypatch):
    original = trl_utils._use_triton
    monkeypatch.setattr("trl.__version__", "9.9.9")
    assert not score_labelled_positions_only() and trl_utils._use_triton is original
