"""memory_needs.py: the estimate of a CPU run's peak memory, and the note that names the flags that lower it."""

import json

from helpers import run_script

from memory_needs import GB, memory_note, model_shape, peak_bytes
from tiny_model import build_tiny_model

SMOLLM2 = {"num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152,
           "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True}  # fmt: skip


def folder_with_config(tmp_path, config=SMOLLM2):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_shape_of_a_model_folder_and_nothing_for_a_hub_name(tmp_path):
    shape = model_shape(folder_with_config(tmp_path))
    assert shape["layers"] == 30 and shape["hidden"] == 576
    assert 130e6 < shape["parameters"] < 140e6  # SmolLM2-135M: 134.5M weights, the embedding tied
    assert model_shape("HuggingFaceTB/SmolLM2-135M-Instruct") is None


def test_the_peak_grows_with_the_tokens_of_a_micro_batch_and_shrinks_with_checkpointing(tmp_path):
    shape = model_shape(folder_with_config(tmp_path))
    small, large = peak_bytes(shape, 2 * 512), peak_bytes(shape, 8 * 512)
    assert small < large < 4 * small
    assert peak_bytes(shape, 8 * 512, gradient_checkpointing=True) < small
    assert peak_bytes(shape, 2 * 512, full_tuning=True) > small + 3 * 4 * 130e6


def test_no_note_when_the_run_fits(tmp_path):
    assert memory_note(folder_with_config(tmp_path), 8, 512, 1, available=64 * GB) is None


def test_a_note_names_the_micro_batch_that_fits_and_keeps_the_update(tmp_path):
    folder = folder_with_config(tmp_path)
    shape = model_shape(folder)
    available = (peak_bytes(shape, 2 * 512) + peak_bytes(shape, 4 * 512)) / 2  # room for 2 rows, not 4
    note = memory_note(folder, 8, 512, 1, available=available)
    assert note.startswith("memory: this run may need ~") and "8 rows of up to 512 tokens" in note
    assert "--per_device_train_batch_size 2 --gradient_accumulation_steps 4 gives the same update" in note
    assert "--per_device_train_batch_size 2 --gradient_accumulation_steps 4 " in memory_note(folder, 4, 512, 2, available=available)


def test_a_run_too_large_for_one_row_points_at_gradient_checkpointing(tmp_path):
    note = memory_note(folder_with_config(tmp_path), 4, 100_000, 1, available=2 * GB)
    assert "--gradient_checkpointing true" in note


def test_sft_says_so_before_the_model_loads(tmp_path):
    # A long enough max_length makes any machine too small; the empty dataset then stops the run before loading.
    folder = build_tiny_model(tmp_path / "model")
    (tmp_path / "data.jsonl").write_text("")
    done = run_script("sft.py", "--model_name_or_path", folder, "--dataset_name", tmp_path / "data.jsonl", "--use_cpu",
                      "--max_length", "1000000000", "--output_dir", tmp_path / "out", "--eval_holdout", "0")  # fmt: skip
    assert done.returncode == 2
    assert "memory: this run may need ~" in done.stdout and "--gradient_checkpointing true" in done.stdout
