"""trl's fused LM head on the CPU: score only the positions that have a label, as it does on a GPU.

GRPO and SFT in trl 1.16 compute their loss through a fused LM head (trl.trainer.utils.add_fused_lm_head): the
backbone's hidden states go through the output projection in tiles and only each position's log-probability of
its label is kept. Where Triton runs (CUDA), only positions with a label are projected; everywhere else every
position is, the prompt's included, because on Neuron a varying number of labelled positions would recompile the
tile shapes. The CPU has no such constraint, and there the prompt is most of a sequence (the system prompt alone
is ~95 tokens): projecting it onto a 49,152-word vocabulary and back again in the backward pass is wasted work.

`score_labelled_positions_only()` makes trl take its compact path on the CPU: the same per-token values, bit for
bit (tests/test_lm_head.py), for a fraction of the projections. It changes the one decision trl's fused forward
makes (the `_use_triton` it imported into trl.trainer.utils), not the kernel's own dispatch, which stays plain
torch on the CPU. Other trl versions are left alone: the private name may mean something else there.
"""

from __future__ import annotations

# The trl releases whose fused forward (trainer/utils.py) decides `compact` with `_use_triton(device)`, and
# nothing else in that module uses the name.
CHECKED_TRL_VERSIONS = ("1.16.0",)


def score_labelled_positions_only() -> bool:
    """Let trl's fused LM head project only labelled positions on the CPU; False where this trl is not one checked."""
    import trl
    import trl.trainer.utils as trl_utils

    if trl.__version__ not in CHECKED_TRL_VERSIONS or not hasattr(trl_utils, "_use_triton"):
        return False
    original = getattr(trl_utils._use_triton, "original", trl_utils._use_triton)

    def compact_here(device):
        return original(device) or device.type == "cpu"

    compact_here.original = original
    trl_utils._use_triton = compact_here
    return True
