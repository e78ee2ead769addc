"""sft.py: the cold-start answers built from GSM8K solutions, the loss mask, and the run end to end on CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED
from helpers import run_script, smoke_error_line

import data
from scoring import score_completion

SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def test_annotations_are_removed_from_the_reasoning():
    completion = data.sft_completion(SOLUTION)
    reasoning = completion.split("<reasoning>\n")[1].split("\n</reasoning>")[0]
    assert reasoning == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert "<<" not in completion and ">>" not in completion and "####" not in completion


def test_validation_rechecks_each_annotated_step():
    completion = data.sft_completion(SOLUTION)
    validation = completion.split("<validate>\n")[1].split("\n</validate>")[0]
    assert "48/2 = 24" in validation and "48+24 = 72" in validation
    assert data.validation_text("No calculator here.", "5").endswith("gives 5.")


def test_validation_can_recheck_only_the_last_steps():
    long_solution = "".join(f"Step {i}: {i}+1 = <<{i}+1={i + 1}>>{i + 1}.\n" for i in range(12)) + "#### 12"
    last = data.sft_completion(long_solution, validate_steps=1)
    assert "<validate>\nChecking the last step again: 11+1 = 12. It holds, so the answer is 12.\n</validate>" in last
    assert "0+1 = 1" in last.split("<validate>")[0]  # the reasoning keeps every step
    assert "10+1 = 11; 11+1 = 12." in data.validation_text(long_solution, "12", steps=2)
    assert data.validation_text(long_solution, "12", steps=12) == data.validation_text(long_solution, "12")


@pytest.mark.parametrize("gold", ["72", "1,000", "-3", "0.5"])
def test_answer_is_the_gold_text_and_scores_strict(gold):
    completion = data.sft_completion(f"It is {gold}.\n#### {gold}")
    assert completion.endswith(f"<answer>\n{gold}\n</answer>")
    assert score_completion(completion, gold) == {"strict": True, "numeric": True, "flexible": True, "formatted": True}


def test_solution_without_gold_gives_no_completion():
    assert data.sft_completion("no final answer here") is None


def test_sft_dataset_from_gsm8k_rows_and_from_a_completion_column(tmp_path):
    gsm8k = tmp_path / "gsm8k.jsonl"
    rows = [{"question": "Q1?", "answer": SOLUTION}, {"question": "Q2?", "answer": "no gold"}]
    gsm8k.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = data.get_sft_dataset(dataset_name=str(gsm8k), report=lambda message: None)
    assert len(dataset) == 1  # the row without "####" is dropped
    assert dataset[0]["prompt"][-1] == {"role": "user", "content": "Q1?"}
    assert dataset[0]["completion"] == [{"role": "assistant", "content": data.sft_completion(SOLUTION)}]
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"question": "Q?", "completion": "<answer>\n4\n</answer>"}) + "\n")
    assert data.get_sft_dataset(dataset_name=str(own))[0]["completion"][0]["content"] == "<answer>\n4\n</answer>"


@pytest.mark.skipif(not (SHARED / "data" / "gsm8k").is_dir(), reason="needs ../shared/data/gsm8k")
def test_every_real_gsm8k_solution_becomes_a_strictly_correct_answer():
    dataset = data.get_sft_dataset(dataset_name=str(SHARED / "data" / "gsm8k"), split="train")
    golds = data.load_raw_split(str(SHARED / "data" / "gsm8k"), "train")["answer"]
    assert len(dataset) == len(golds) == 7473
    for example, solution in zip(dataset, golds):
        text = example["completion"][0]["content"]
        assert score_completion(text, data.extract_hash_answer(solution))["strict"]
        assert "<<" not in text


def test_loss_is_on_the_assistant_tokens_only(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = data.get_sft_dataset(dataset_name=str(REPO / "samples" / "gsm8k"), limit=2)
    args = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    for example, processed in zip(dataset, trainer.train_dataset):
        ids = processed["input_ids"]
        # trl 1.16 turns the completion mask into labels (-100 = no loss); 1.15 keeps the mask itself.
        mask = [label != -100 for label in processed["labels"]] if "labels" in processed else processed["completion_mask"]
        trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        assert trained == example["completion"][0]["content"] + "<|im_end|>\n"
        prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        assert prompt == tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_run_then_grpo_from_it_then_evaluation(tmp_path):
    sft_dir = tmp_path / "sft"
    result = run_script("sft.py", "--smoke", "--output_dir", sft_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("adapter_config.json", "adapter_model.safetensors", "run_config.json", "metrics.jsonl"):
        assert (sft_dir / name).is_file(), name
    assert (sft_dir / "merged" / "config.json").is_file() and (sft_dir / "merged" / "tokenizer.json").is_file()
    assert f"python train.py --model_name_or_path {sft_dir / 'merged'}" in result.stdout

    grpo = run_script("train.py", "--smoke", "--model_name_or_path", sft_dir / "merged", "--output_dir",
                      tmp_path / "grpo", "--max_steps", "1")  # fmt: skip
    assert grpo.returncode == 0, grpo.stderr[-3000:]
    adapter = json.loads((tmp_path / "grpo" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == sft_dir / "merged"

    scored = run_script("evaluate.py", "--checkpoint", sft_dir, "--smoke", "--limit", "2", "--output_dir", tmp_path / "ev")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert set(json.loads((tmp_path / "ev" / "summary.json").read_text())["models"]) == {"base", "tuned"}


@pytest.mark.slow
def test_ctrl_c_while_merging_says_what_was_written_and_how_to_finish(tmp_path):
    out = tmp_path / "sft"
    code = "import sys, sft\ndef ctrl_c(*args):\n    raise KeyboardInterrupt\nsft.save_merged = ctrl_c\nsft.main(sys.argv[1:])\n"
    result = subprocess.run([sys.executable, "-c", code, "--smoke", "--output_dir", str(out), "--max_steps", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 130, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"interrupted while writing the merged model to {out}/merged, after training ended at step "
                           f"2: the adapter + tokenizer are in {out}; the last checkpoint is {out}/checkpoint-2. "
                           "To finish: python sft.py ")  # fmt: skip
    assert last.endswith(" --resume") and "interrupted at step" not in result.stdout
    finish = run_script("sft.py", "--smoke", "--output_dir", out, "--max_steps", "2", "--resume")
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "done: 2 steps" in finish.stdout and (out / "merged" / "config.json").is_file()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2  # finished, not trained a step further


def test_full_fine_tuning_and_resume(tmp_path):
    out = tmp_path / "full"
    first = run_script("sft.py", "--smoke", "--use_peft", "false", "--output_dir", out, "--max_steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    again = run_script("sft.py", "--smoke", "--use_peft", "false", "--output_dir", out, "--max_steps", "3")
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = run_script("sft.py", "--smoke", "--use_peft", "false", "--output_dir", out, "--max_steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset_name", "/no/such/data.jsonl"], "dataset /no/such/data.jsonl: no such file or folder"),
        (["--model_name_or_path", "/no/such/model"], "model '/no/such/model' not found"),
        (["--max_samples", "0"], "max_samples must be positive"),
        (["--validate_steps", "0"], "validate_steps must be positive"),
        (["--lora_r", "0"], "lora_r and lora_alpha must be positive"),
        (["--learning_rat", "1"], "unknown option --learning_rat (did you mean --learning_rate?)"),
        (["--resume"], "--resume: no checkpoint-* folder in"),
    ],
)
def test_bad_input_fails_fast_with_one_line(tmp_path, args, message):
    assert smoke_error_line("sft.py", tmp_path / "out", *args, message=message).startswith("sft.py: error:")
    assert not (tmp_path / "out" / "base-model").exists()


def test_help_lists_sfts_own_options_first(capsys):
    import sft

    with pytest.raises(SystemExit):
        sft.parse_args(["--help"])
    options = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
    assert options[0] == "--model_name_or_path" and "--use_peft" in options and "--learning_rate" in options
    assert len(options) < 40
