"""ask.py as a user runs it: one question to the base model and a checkpoint, each answer under the name of the
weights that wrote it, the reward's scores when the gold answer is known, and bad input as one line."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers import build_wide_tiny_model, write_random_adapter

from rewards import REWARD_FUNCS
from scoring import score_completion

QUESTION = "Mia has 4 pens and buys 3 more. How many pens does she have?"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """smoke's tiny model with wide weights: greedy answers depend on the prompt and on an adapter."""
    return build_wide_tiny_model(tmp_path_factory.mktemp("ask") / "model").resolve()


def run_ask(*args, cwd=REPO, stdin="", timeout=120) -> subprocess.CompletedProcess:
    """`python ask.py ARGS...` with `stdin` piped in (so not a terminal), offline."""
    return subprocess.run(
        [sys.executable, str(REPO / "ask.py"), *map(str, args)],
        cwd=cwd, input=stdin, capture_output=True, check=False, text=True, timeout=timeout, env=os.environ.copy(),
    )  # fmt: skip


def answers(stdout: str) -> dict[str, str]:
    """The answers ask.py printed, by heading ('base: PATH', 'adapter: PATH on BASE', 'merged: PATH')."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in stdout.splitlines():
        if line.startswith("=== ") and line.endswith(" ==="):
            heading = line[4:-4]
            found[heading] = []
        elif line.startswith("gold answer: "):
            heading = None
        elif heading is not None:
            found[heading].append(line)
    return {heading: "\n".join(lines).strip() for heading, lines in found.items()}


@pytest.mark.slow
@pytest.mark.parametrize("std", [1.0, 0.0])
def test_the_adapter_answers_under_its_name_and_changes_the_answer_unless_it_is_zero(tiny_model, tmp_path, std):
    """lora_B drawn at random changes the greedy answer; all zeros leaves the base model's: so it is applied."""
    adapter = write_random_adapter(tiny_model, tmp_path / "checkpoint-1", ["q_proj", "v_proj"], std).resolve()
    result = run_ask("--checkpoint", adapter, "--question", QUESTION, "--max_new_tokens", 16)
    assert result.returncode == 0, result.stderr[-2000:]
    found = answers(result.stdout)
    assert list(found) == [f"base: {tiny_model}", f"adapter: {adapter} on {tiny_model}"]
    base, tuned = found.values()
    assert base and tuned
    assert (base == tuned) == (std == 0.0)


@pytest.mark.slow
def test_an_adapter_whose_weights_do_not_fit_its_base_is_an_error_not_the_base_model(tiny_model, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "mismatched"
    folder.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": str(tiny_model), "r": 8, "lora_alpha": 16,
              "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {"base_model.model.lora_A.weight": np.zeros((8, 64), dtype=np.float32)}, folder / "adapter_model.safetensors"
    )
    result = run_ask("--checkpoint", folder, "--question", QUESTION, "--max_new_tokens", 4)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"ask.py: error: --checkpoint {folder.resolve()}: its weights do not fit")
    )
    assert result.stdout == ""  # no answer at all, least of all the base model's under the adapter's name


RUN_MAIN = "import sys, ask\ntry:\n    ask.main(sys.argv[1:])\nfinally:\n    print('torch' in sys.modules)"


def bad_inputs(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage-adapter"
    garbage.mkdir()
    (garbage / "adapter_config.json").write_text("{not json at all")
    (tmp_path / "model.gguf").write_text("not a model")
    return {
        "missing checkpoint": (["--checkpoint", tmp_path / "nope"], "no such folder"),
        "neither adapter nor model": (["--checkpoint", empty], "neither a LoRA adapter"),
        "broken adapter": (["--checkpoint", garbage], "adapter_config.json cannot be read"),
        "index out of range": (["--smoke", "--index", "999"], "--index 999: "),
        "negative index": (["--smoke", "--index", "-1"], "--index -1: "),
        "question and index": (["--smoke", "--index", "0", "--question", "hi"], "do not go together"),
        "empty standard input": (["--base_model", tiny_model], "no question on standard input"),
        "negative temperature": (["--smoke", "--temperature", "-1", "--question", "hi"], "--temperature must be"),
        "not a gguf file": (["--checkpoint", tmp_path / "model.gguf", "--question", "hi"], "not a GGUF file"),
        "missing gguf file": (["--checkpoint", tmp_path / "nope.gguf", "--question", "hi"], "no such file"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing checkpoint", "neither adapter nor model", "broken adapter", "index out of range", "negative index",
     "question and index", "empty standard input", "negative temperature", "not a gguf file", "missing gguf file"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2_before_a_model_loads(case, tmp_path, tiny_model):
    argv, expected = bad_inputs(tmp_path, tiny_model)[case]
    result = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *map(str, argv)], cwd=tmp_path, input="", capture_output=True, text=True,
        check=False, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("ask.py: error: ") and expected in lines[0], result.stderr
    assert result.stdout.strip() == "False"  # torch never imported: no model was loaded


@pytest.mark.slow
def test_a_piped_question_is_answered_once_by_each_model(tiny_model):
    """Standard input is not a terminal: one question read from it, one answer per model, exit 0.

    The tiny model given as a merged checkpoint: the same weights, so the same answer, under 'merged'."""
    result = run_ask(
        "--base_model", tiny_model, "--checkpoint", tiny_model, "--max_new_tokens", 8, stdin=QUESTION + "\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("question: ") == 1 and f"question: {QUESTION}\n" in result.stdout
    found = answers(result.stdout)
    assert list(found) == [f"base: {tiny_model}", f"merged: {tiny_model}"]
    assert len(set(found.values())) == 1
    assert "gold answer" not in result.stdout  # no gold answer, no scores


@pytest.mark.slow
def test_a_problem_by_index_shows_its_gold_answer_and_every_score(tmp_path):
    """--smoke --index: a shipped sample problem to the tiny model, then evaluate.py's checks and each reward."""
    result = run_ask("--smoke", "--index", 0, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(answers(result.stdout)) == [f"base: {(tmp_path / 'eval_results/smoke/tiny-model').resolve()}"]
    table = result.stdout[result.stdout.index("gold answer: 46") :].splitlines()
    rows = {line.split()[0]: line.split()[1] for line in table[2:]}
    assert list(rows) == [*score_completion("", "46"), *REWARD_FUNCS]


@pytest.mark.slow
def test_a_gguf_file_answers_through_llama_cpp_as_its_folder_does(tiny_model, tmp_path):
    """export_gguf.py's f32 file of the tiny model, asked next to the same model in transformers: the same greedy
    answer, under 'gguf: PATH', and a score table with a column for each."""
    from machine import is_installed

    if not is_installed("llama_cpp"):
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed (requirements-vllm-cpu.txt builds it)")
        pytest.skip("llama-cpp-python is not installed")
    gguf = tmp_path / "tiny.gguf"
    done = subprocess.run(
        [sys.executable, str(REPO / "export_gguf.py"), str(tiny_model), "--output", str(gguf), "--outtype", "f32"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = run_ask("--base_model", tiny_model, "--checkpoint", gguf, "--question", QUESTION, "--gold", "7",
                     "--max_new_tokens", 16)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = answers(result.stdout)
    assert list(found) == [f"base: {tiny_model}", f"gguf: {gguf.resolve()}"]
    base, from_gguf = found.values()
    assert base and base == from_gguf
    header = result.stdout[result.stdout.index("gold answer: 7") :].splitlines()[1].split()
    assert header[1:3] == ["base", "gguf"]
