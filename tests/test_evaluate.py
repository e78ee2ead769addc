"""evaluate.py: base vs checkpoint on a tiny model, the base cache, bad input (scorer: test_scoring.py; vLLM: test_vllm.py)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from helpers import build_wide_tiny_model, write_random_adapter

import evaluate
from data import SAMPLE_DATA_DIR, get_gsm8k_questions
from evaluate import main
from generation import ModelSource, generate_hf, load_tokenizer, prompt_texts, to_completion
from run_metrics import read_jsonl

SAMPLES = str(SAMPLE_DATA_DIR)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """smoke's tiny model with its weights redrawn wider (std 0.3).

    With smoke's own init (std 0.02) greedy decoding prints newlines only: every prompt gives the same
    completion, so batching and an adapter would have nothing to change.
    """
    return build_wide_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter (r=8, q_proj/v_proj) on the tiny model, lora_B drawn at random so it changes outputs."""
    return write_random_adapter(tiny_model, tmp_path_factory.mktemp("adapter") / "checkpoint-1", ["q_proj", "v_proj"], 1.0)


def read_records(path):
    """evaluate.py's records in a .jsonl file, every line of which must be readable."""
    records, unreadable = read_jsonl(path)
    assert unreadable == 0, path
    return records


# ---------------------------------------------------------------------------------------------------------
# Imports: no torch for the scorer, and our evaluate.py does not break Hugging Face's libraries


def test_import_evaluate_does_not_import_torch():
    code = (
        "import sys, evaluate; print(sorted(m for m in ('torch', 'transformers', 'peft', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_our_evaluate_shadows_hf_evaluate_without_breaking_transformers_peft_trl():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import evaluate; assert evaluate.PROG == 'evaluate.py', evaluate.__file__\n"
        "import transformers, peft, trl\n"
        "from transformers import Trainer\n"
        "from peft import PeftModel\n"
        "from trl import GRPOConfig, GRPOTrainer\n"
        "print(evaluate.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(REPO / "evaluate.py")


# ---------------------------------------------------------------------------------------------------------
# Flags


def test_flags_take_dashes_or_underscores():
    args = evaluate.parse_args(["--max-new-tokens", "7", "--dataset_name", "x", "--batch-size", "2", "--smoke"])
    assert (args.max_new_tokens, args.dataset_name, args.batch_size, args.smoke) == (7, "x", 2, True)


@pytest.mark.parametrize("flag", ["--max_new_token", "--temperature"])  # a misspelling is not taken as an abbreviation
def test_unknown_flag_is_an_error(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--smoke", flag, "5", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag} 5" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Bad input: exit code 2 and one line, before torch (so before any model) is imported

RUN_MAIN = "import sys, evaluate\ntry:\n    evaluate.main(sys.argv[1:])\nfinally:\n    print('torch' in sys.modules)"


def write_adapter(folder, base_model, **config):
    """A LoRA adapter folder as peft writes it: adapter_config.json and a small adapter_model.safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir()
    settings = {"peft_type": "LORA", "base_model_name_or_path": base_model, "r": 8, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    save_file({"base_model.model.lora_A.weight": np.zeros((8, 64), dtype=np.float32)}, folder / "adapter_model.safetensors")
    return folder


def bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    orphan = write_adapter(tmp_path / "orphan-adapter", "nobody/no-such-model")
    truncated = write_adapter(tmp_path / "truncated-adapter", "nobody/no-such-model")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    no_rank = write_adapter(tmp_path / "no-rank-adapter", "nobody/no-such-model", r=None)
    merged = tmp_path / "merged"
    shutil.copytree(truncated, merged)
    (merged / "adapter_config.json").unlink()
    (merged / "adapter_model.safetensors").rename(merged / "model.safetensors")
    (merged / "config.json").write_text("{}")
    broken = tmp_path / "test.jsonl"
    broken.write_text('{"question": "2+2?", "answer": "#### 4"\n')
    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    return {
        "truncated model weights": (["--checkpoint", str(merged)], "model.safetensors is truncated or corrupt"),
        "missing checkpoint": (["--checkpoint", str(tmp_path / "nope")], "no such folder"),
        "neither adapter nor model": (["--checkpoint", str(empty)], "neither a LoRA adapter"),
        "adapter base model not found": (["--checkpoint", str(orphan)], "nobody/no-such-model"),
        "truncated adapter weights": (["--checkpoint", str(truncated)], "adapter_model.safetensors is truncated or corrupt"),
        "adapter config without rank": (["--checkpoint", str(no_rank)], "adapter_config.json has no r"),
        "base model not found": (["--base_model", str(tmp_path / "no-model")], "no local folder with config.json"),
        "unreadable dataset": (["--smoke", "--dataset_name", str(broken)], "cannot be read"),
        "output_dir is a file": (["--smoke", "--output_dir", str(a_file)], f"{a_file} is a file, not a folder"),
        "output_dir under a file": (["--smoke", "--output_dir", str(a_file / "eval")], f"{a_file} is a file"),
        "zero batch size": (["--smoke", "--backend", "hf", "--batch_size", "0"], "--batch_size must be positive"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "neither adapter nor model",
        "adapter base model not found",
        "truncated adapter weights",
        "adapter config without rank",
        "truncated model weights",
        "base model not found",
        "unreadable dataset",
        "output_dir is a file",
        "output_dir under a file",
        "zero batch size",
    ],
)
def test_bad_input_fails_fast_with_one_line(case, tmp_path):
    argv, expected = bad_inputs(tmp_path)[case]
    out = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: ") and expected in lines[0], out.stderr
    assert out.stdout.strip() == "False"  # torch never imported: no model was loaded
    assert not (tmp_path / "eval_results").exists()


# ---------------------------------------------------------------------------------------------------------
# transformers generation


def test_completion_is_cut_at_the_first_stop_token(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    word = tokenizer("46", add_special_tokens=False).input_ids
    stopped = to_completion(tokenizer, [*word, eos, pad, pad], [eos])
    assert (stopped.text, stopped.num_tokens, stopped.cut_off) == ("46", len(word) + 1, False)
    running = to_completion(tokenizer, [*word, *word], [eos])
    assert (running.text, running.num_tokens, running.cut_off) == ("4646", 2 * len(word), True)


@pytest.mark.slow
def test_batched_generation_equals_one_at_a_time(tiny_model):
    prompts = get_gsm8k_questions(split="test", dataset_name=SAMPLES)["prompt"]
    source = ModelSource("base", str(tiny_model), str(tiny_model))
    batched = generate_hf(source, prompts, max_new_tokens=16, batch_size=8)
    single = generate_hf(source, prompts, max_new_tokens=16, batch_size=1)
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert len({tuple(c.token_ids) for c in batched}) > 1  # the prompts really lead to different completions


# ---------------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_smoke_run_writes_files_and_prints_the_table(tmp_path, capsys):
    summary = main(["--smoke", "--output_dir", str(tmp_path), "--limit", "4"])
    out = capsys.readouterr().out
    header, row, meaning = out.strip().splitlines()
    assert header.split() == ["model", "n", "strict", "numeric", "flexible", "formatted", "mean_tokens", "cut_off"]
    assert row.split()[:2] == ["base", "4"]
    assert "0.0887 -> tuned 0.6528" in meaning
    assert json.loads((tmp_path / "summary.json").read_text())["models"] == summary["models"]
    records = read_records(tmp_path / "base.jsonl")
    assert len(records) == 4 and records[0]["gold"] == "46"
    assert set(records[0]) >= {
        "question",
        "gold",
        "completion",
        "answer",
        "last_number",
        "strict",
        "numeric",
        "flexible",
        "formatted",
        "tokens",
        "cut_off",
    }
    assert 0 < summary["models"]["base"]["mean_tokens"] <= 32


def run_checkpoint(checkpoint, output_dir, *extra):
    return main(
        [
            "--checkpoint",
            str(checkpoint),
            "--dataset_name",
            SAMPLES,
            "--max_new_tokens",
            "16",
            "--output_dir",
            str(output_dir),
            *extra,
        ]
    )


@pytest.mark.slow
def test_adapter_is_scored_next_to_its_base(adapter, tiny_model, tmp_path, capsys):
    summary = run_checkpoint(adapter, tmp_path, "--limit", "4")  # base model: from adapter_config.json
    assert list(summary["models"]) == ["base", "tuned"]
    assert summary["settings"]["base_model"] == str(tiny_model)
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == ["base", "tuned"]
    base, tuned = read_records(tmp_path / "base.jsonl"), read_records(tmp_path / "tuned.jsonl")
    assert [r["question"] for r in base] == [r["question"] for r in tuned]
    assert [r["completion"] for r in base] != [r["completion"] for r in tuned]  # the adapter was applied


@pytest.mark.slow
def test_base_results_are_reused_from_the_cache(adapter, tmp_path, capsys):
    run_checkpoint(adapter, tmp_path, "--limit", "4")
    first = (tmp_path / "base.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    summary = run_checkpoint(adapter, tmp_path, "--limit", "4")
    log = capsys.readouterr().err
    assert "base: reusing 4 cached completions" in log and "base: generating" not in log
    assert "tuned: generating" in log
    assert (tmp_path / "base.jsonl").stat().st_mtime_ns == first
    assert summary["models"]["base"]["n"] == 4


@pytest.mark.slow
def test_a_second_checkpoint_reuses_the_base_results(adapter, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRPO_EVAL_CACHE", str(tmp_path / "shared"))
    run_checkpoint(adapter, tmp_path / "first", "--limit", "4")
    capsys.readouterr()
    summary = run_checkpoint(adapter, tmp_path / "second", "--limit", "4")
    log = capsys.readouterr().err
    assert "base: reusing 4 cached completions from " + str(tmp_path / "shared") in log
    assert "base: generating" not in log
    assert read_records(tmp_path / "second" / "base.jsonl") == read_records(tmp_path / "first" / "base.jsonl")
    assert summary["models"]["base"]["n"] == 4


@pytest.mark.slow
def test_base_cache_is_invalidated_when_the_settings_change(adapter, tmp_path, capsys):
    run_checkpoint(adapter, tmp_path, "--limit", "4")
    capsys.readouterr()
    run_checkpoint(adapter, tmp_path, "--limit", "3")
    assert "base: generating 3 completions" in capsys.readouterr().err
    run_checkpoint(adapter, tmp_path, "--limit", "4")  # back to the first settings: from the shared cache
    assert "base: reusing 4 cached completions" in capsys.readouterr().err
    assert len(read_records(tmp_path / "base.jsonl")) == 4
    run_checkpoint(adapter, tmp_path, "--limit", "3")
    capsys.readouterr()
    assert len(read_records(tmp_path / "base.jsonl")) == 3
    assert json.loads((tmp_path / "base.cache.json").read_text())["limit"] == 3


@pytest.mark.slow
def test_a_base_model_rewritten_in_place_is_generated_again(tiny_model, tmp_path, capsys, monkeypatch):
    """An SFT run retrained into the same folder: same path, new weights; neither cache may answer for it."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("GRPO_EVAL_CACHE", str(tmp_path / "shared"))
    base = shutil.copytree(tiny_model, tmp_path / "sft")
    flags = ["--base_model", str(base), "--dataset_name", SAMPLES, "--limit", "2", "--max_new_tokens", "8"]
    main([*flags, "--output_dir", str(tmp_path / "first")])
    main([*flags, "--output_dir", str(tmp_path / "second")])
    assert "base: reusing 2 cached completions from " + str(tmp_path / "shared") in capsys.readouterr().err

    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(-1.0)
    model.save_pretrained(base)  # the same folder, rewritten
    main([*flags, "--output_dir", str(tmp_path / "first")])  # neither its own cache nor the shared one answers
    log = capsys.readouterr().err
    assert "base: generating 2 completions" in log and "reusing" not in log
    main([*flags, "--output_dir", str(tmp_path / "third")])  # the new model's results are the ones shared
    assert "base: reusing 2 cached completions from " + str(tmp_path / "shared") in capsys.readouterr().err
    assert read_records(tmp_path / "third" / "base.jsonl") == read_records(tmp_path / "first" / "base.jsonl")


@pytest.mark.slow
def test_a_read_only_home_keeps_the_results_and_warns(tmp_path, capsys, monkeypatch):
    """The shared cache under ~ cannot be written (here: ~ is a file); the run still writes its own results."""
    home = tmp_path / "home"
    home.write_text("")
    monkeypatch.delenv("GRPO_EVAL_CACHE")
    monkeypatch.setenv("HOME", str(home))
    summary = main(["--smoke", "--limit", "2", "--output_dir", str(tmp_path / "out")])
    log = capsys.readouterr().err
    assert f"warning: cannot write the shared cache {home}/.cache/grpo-home/eval/" in log
    assert summary["models"]["base"]["n"] == 2 and len(read_records(tmp_path / "out" / "base.jsonl")) == 2
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["models"] == summary["models"]
    assert (tmp_path / "out" / "base.cache.json").is_file()  # the local cache still works


@pytest.mark.slow
def test_merged_model_checkpoint_results_default_to_its_eval_folder(tiny_model, tmp_path):
    checkpoint = shutil.copytree(tiny_model, tmp_path / "merged")  # a full model: the same weights as the base
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--base_model",
            str(tiny_model),
            "--dataset_name",
            SAMPLES,
            "--limit",
            "3",
            "--max_new_tokens",
            "8",
        ]
    )
    base, tuned = read_records(checkpoint / "eval" / "base.jsonl"), read_records(checkpoint / "eval" / "tuned.jsonl")
    assert [r["completion"] for r in base] == [r["completion"] for r in tuned]
