"""Smaller micro-batches, the same update: a batch split by gradient accumulation gives the loss and gradients
of the whole batch at once (within float32 rounding), in sft.py and in train.py's GRPO.

The CPU recipes split their batches this way to fit a laptop's memory (docs/BENCHMARKS.md, "Peak memory"):
the full-vocabulary logits and the activations kept for the backward pass grow with the tokens of a micro-batch.
"""

import pytest
import torch
from transformers import TrainerCallback

import sft
import train

pytestmark = pytest.mark.slow


class FirstStepGradients(TrainerCallback):
    """The trainable weights' gradients just before the first optimizer step, and the logged loss of that step."""

    def __init__(self):
        self.gradients: dict[str, torch.Tensor] = {}
        self.loss = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.gradients:
            self.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.loss is None and logs and "loss" in logs:
            self.loss = logs["loss"]


def assert_same_update(whole: FirstStepGradients, split: FirstStepGradients) -> None:
    assert whole.gradients and whole.gradients.keys() == split.gradients.keys()
    # LoRA's B starts at zero, so the first step's A gradients are zero: B's carry the update.
    assert sum(int(gradient.abs().max() > 0) for gradient in whole.gradients.values()) >= len(whole.gradients) // 2
    for name, gradient in whole.gradients.items():
        torch.testing.assert_close(split.gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)
    assert split.loss == pytest.approx(whole.loss, rel=1e-4, abs=1e-6)


def first_step(main, output_dir, micro_batch: int, accumulation: int, *args: str) -> FirstStepGradients:
    recorded = FirstStepGradients()
    argv = ["--smoke", "--output_dir", str(output_dir), "--max_steps", "1", "--logging_steps", "1",
            "--per_device_train_batch_size", str(micro_batch), "--gradient_accumulation_steps", str(accumulation), *args]  # fmt: skip
    main(argv, extra_callbacks=[recorded])
    return recorded


def test_sft_batch_of_8_split_into_4_micro_batches_of_2_gives_the_same_loss_and_gradients(tmp_path):
    whole = first_step(sft.main, tmp_path / "whole", 8, 1)
    split = first_step(sft.main, tmp_path / "split", 2, 4)
    assert_same_update(whole, split)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_grpo_generation_batch_of_8_trained_in_micro_batches_of_2_gives_the_same_loss_and_gradients(tmp_path, loss_type):
    # 2 problems x 4 completions, generated at once either way (generation_batch_size stays 8); the completions are
    # the same with the same seed, and a step's loss is the mean over the whole generation batch either way.
    # The tiny random model never earns the blog's reward: a reward for length gives the completions advantages.
    reward_file = tmp_path / "length_reward.py"
    reward_file.write_text("def length(completions, **kwargs):\n    return [float(len(c[0]['content'])) for c in completions]\n")
    common = ("--num_generations", "4", "--loss_type", loss_type, "--eval_holdout", "0", "--seed", "3",
              "--reward_funcs", f"{reward_file}:length")  # fmt: skip
    whole = first_step(train.main, tmp_path / "whole", 8, 1, *common)
    split = first_step(train.main, tmp_path / "split", 2, 4, *common)
    assert_same_update(whole, split)
