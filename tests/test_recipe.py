"""The recipe (train.py's defaults) is the blog's run, in option names both pinned trl versions know."""

from dataclasses import fields

import yaml

import train

# What the blog's trainer (trl 0.14, early 2025) optimised, field by field, where trl 1.x has a setting for it:
# the values train.py must resolve to. Read from trl 0.14's GRPOTrainer: advantages (r - group mean) / group
# std, per-sequence mean loss, KL 0.04 with no importance factor, one pass per generation, sampling at 0.9
# with nothing else, no correction of the generator's probabilities, shuffled prompts.
BLOG_OBJECTIVE = {
    "beta": 0.04,
    "loss_type": "grpo",
    "temperature": 0.9,
    "scale_rewards": "group",
    "num_iterations": 1,
    "use_bias_correction_kl": False,
    "vllm_importance_sampling_correction": False,
    "mask_truncated_completions": False,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "shuffle_dataset": True,
    "top_entropy_quantile": 1.0,
    "entropy_coef": 0.0,
    "off_policy_mask_threshold": None,
    "delta": None,
}


def test_the_recipe_trains_the_blogs_objective():
    _, training_args, _, _ = train.parse_args(["--backend", "hf"])
    resolved = {name: getattr(training_args, name) for name in BLOG_OBJECTIVE}
    resolved["loss_type"] = str(getattr(resolved["loss_type"], "value", resolved["loss_type"]))
    assert resolved == BLOG_OBJECTIVE


def test_every_recipe_key_is_an_option():
    # trl 1.15 (the GPU pin) and 1.16 (installed here) have the same 189 GRPOConfig field names; the recipe
    # must stay within them, so it loads with either.
    from trl import GRPOConfig

    known = {f.name for f in fields(train.ScriptArguments)} | {f.name for f in fields(GRPOConfig)}
    recipe = yaml.safe_load(train.RECIPE.read_text())
    assert sorted(set(recipe) - known) == []
