"""A full checkpoint is scored against the model its run started from, never a base of another model family."""

import json

from helpers import run_script


def test_trained_from_reads_the_run_config_beside_or_above_a_checkpoint(tmp_path):
    from models import trained_from

    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"script": {"model_name_or_path": "/models/base"}}))
    assert trained_from(run / "merged") == "/models/base"
    assert trained_from(run) == "/models/base"
    assert trained_from(tmp_path) is None


def test_full_fine_tune_is_scored_against_its_own_base(tmp_path):
    """sft.py --use_peft false prints `evaluate.py --checkpoint DIR` as the next step: that must score DIR against
    the model sft.py started from, not Qwen2.5-0.5B-Instruct (evaluate.py's default, another family here)."""
    from data import SAMPLE_DATA_DIR

    out = tmp_path / "sft"
    done = run_script("sft.py", "--smoke", "--use_peft", "false", "--max_steps", 1, "--output_dir", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"python evaluate.py --checkpoint {out}" in done.stdout
    base = json.loads((out / "run_config.json").read_text())["script"]["model_name_or_path"]

    done = run_script(
        "evaluate.py", "--checkpoint", out, "--dataset_name", SAMPLE_DATA_DIR, "--split", "test", "--limit", 2,
        "--max_new_tokens", 4, "--backend", "hf",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    settings = json.loads((out / "eval" / "summary.json").read_text())["settings"]
    assert settings["base_model"] == base and settings["checkpoint"] == str(out.resolve())


def test_a_base_of_another_model_family_is_refused_before_loading(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    import tiny_model

    qwen = tiny_model.build_tiny_model(tmp_path / "qwen")
    tokenizer = tiny_model.build_tiny_tokenizer()
    llama = tmp_path / "llama"
    config = LlamaConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1,
        vocab_size=len(tokenizer) + 7, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(llama)
    tokenizer.save_pretrained(llama)

    done = run_script("evaluate.py", "--checkpoint", llama, "--base_model", qwen, "--smoke", timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "different model families" in lines[-1], done.stderr[-2000:]
    assert "pass the model it was trained from as --base_model" in lines[-1]
