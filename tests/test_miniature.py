"""miniature.py: the seeded problem generator (pure Python) and the tiny model and tokenizer built for it."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO

import data
import miniature
from run_metrics import read_jsonl

ANNOTATION = re.compile(r"<<([^=>]+)=([^>]+)>>")


def test_same_seed_same_rows_other_seed_other_rows():
    assert miniature.make_splits(3, 300, 50) == miniature.make_splits(3, 300, 50)
    assert miniature.make_splits(3, 300, 50)["train"] != miniature.make_splits(4, 300, 50)["train"]


def test_test_split_does_not_depend_on_the_train_size_beyond_exclusion():
    small, large = miniature.make_splits(0, 100, 50)["test"], miniature.make_splits(0, 400, 50)["test"]
    large_questions = {row["question"] for row in large}
    assert sum(row["question"] in large_questions for row in small) >= 45


def steps_of(row):
    """The row's calculations in order, operands of + and * sorted: 3+2 and 2+3 are the same calculation."""
    steps = []
    for expression, _ in ANNOTATION.findall(row["answer"]):
        op = next((op for op in "+*" if op in expression), None)
        steps.append(op.join(sorted(expression.split(op), key=int)) if op else expression)
    return tuple(steps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_test_two_step_chains_are_in_no_training_or_cold_start_problem(tmp_path, seed):
    """New names and objects are not new problems: the test's two-step calculations must be new as a pair."""
    folder = miniature.write_dataset(tmp_path / "data", seed=seed, n_train=4000, n_test=200)
    cold = miniature.write_cold_start(tmp_path / "cold", folder, seed=seed)
    train = read_jsonl(folder / "train.jsonl")[0]
    test = read_jsonl(folder / "test.jsonl")[0]
    cold_rows = read_jsonl(cold / "train.jsonl")[0]
    assert len({row["question"] for row in train}) == 4000 and len({row["question"] for row in test}) == 200
    assert not {row["question"] for row in train} & {row["question"] for row in test}
    # The cold-start set solves the training problems (a prefix of their chains where the writer stops early).
    assert [row["question"] for row in cold_rows] == [row["question"] for row in train]
    seen = {steps_of(row) for row in train} | {steps_of(row) for row in cold_rows}
    test_chains = [steps_of(row) for row in test if len(steps_of(row)) == 2]
    assert len(test_chains) > 0.4 * len(test) and len(set(test_chains)) >= 15
    assert not set(test_chains) & seen
    # Each step alone is a known calculation: one-step facts and the steps of other chains are shared.
    trained_steps = {step for chain in seen for step in chain}
    assert all(step in trained_steps for chain in test_chains for step in chain)


def test_every_generated_chain_is_one_the_split_logic_knows():
    rows = miniature.generate_problems(5, 3000)
    chains = {miniature.chain_of(row) for row in rows}
    assert {c for c in chains if len(c) == 2} == miniature.two_step_chains()
    assert {c[0] for c in chains if len(c) == 1} == miniature.one_step_facts()
    assert all(miniature.chain_of(row) == steps_of(row) for row in rows[:200])


def test_rows_have_gsm8k_shape_and_the_gold_is_the_last_calculation():
    for row in miniature.make_splits(1, 500, 0)["train"]:
        assert set(row) == {"question", "answer"}
        assert row["question"].endswith("?")
        body, gold = row["answer"].split("\n#### ")
        assert gold.isdigit() and int(gold) >= 0
        annotations = ANNOTATION.findall(body)
        assert 1 <= len(annotations) <= 2 and len(body.splitlines()) == len(annotations)
        for expression, result in annotations:
            assert miniature.evaluate_expression(expression) == eval(expression) == int(result)  # noqa: S307
            # GSM8K writes the result right after the annotation: "7+5=<<7+5=12>>12 pens".
            assert f"{expression}=<<{expression}={result}>>{result} " in body
        assert annotations[-1][1] == gold
        if len(annotations) == 2:  # the second step starts from the first step's result
            assert annotations[1][0].startswith(annotations[0][1])


def test_every_template_occurs():
    answers = [row["answer"] for row in miniature.make_splits(0, 400, 0)["train"]]
    ops = {"".join(op for op in "+-*" if op in expr) for a in answers for expr, _ in [ANNOTATION.findall(a)[0]]}
    assert ops == {"+", "-", "*"}
    assert sum(a.count("<<") == 2 for a in answers) > 0.2 * len(answers)


def test_asking_for_more_problems_than_exist_is_an_error(monkeypatch):
    monkeypatch.setattr(miniature, "NAMES", ("Ava", "Ben"))
    monkeypatch.setattr(miniature, "OBJECTS", ("pens",))
    monkeypatch.setattr(miniature, "CONTAINERS", ("bags",))
    monkeypatch.setattr(miniature, "MAX_TERM", 1)
    monkeypatch.setattr(miniature, "MAX_FACTOR", 2)
    with pytest.raises(ValueError, match="distinct problems"):
        miniature.generate_problems(0, 50)


def test_data_py_reads_the_written_folder(tmp_path):
    folder = miniature.write_dataset(tmp_path / "mini", seed=2, n_train=60, n_test=20)
    train = data.get_gsm8k_questions("train", str(folder))
    test = data.get_gsm8k_questions("test", str(folder))
    assert len(train) == 60 and len(test) == 20
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    assert test["answer"] == [row["answer"].split("#### ")[1] for row in rows]
    assert test[0]["prompt"][1]["content"] == rows[0]["question"]


def test_cli_writes_data(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "miniature.py"), "data", str(tmp_path / "d"), "--seed", "5", "--train", "30", "--test", "10"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert len((tmp_path / "d" / "train.jsonl").read_text().splitlines()) == 30
    assert str(tmp_path / "d") in done.stdout


def test_tiny_model_and_tokenizer_fit_the_problems(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data import sft_completion
    from prompts import build_messages

    folder = miniature.write_dataset(tmp_path / "data", seed=0, n_train=200, n_test=10)
    model_dir = miniature.build_model(tmp_path / "model", folder, seed=0, shape=dict(miniature.MINIATURE_SHAPE, hidden_size=32, intermediate_size=64))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size >= len(tokenizer) and tokenizer.eos_token == "<|im_end|>"
    row = read_jsonl(folder / "test.jsonl")[0][0]
    messages = build_messages(row["question"]) + [{"role": "assistant", "content": sft_completion(row["answer"])}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    # Every word of the prompt and the answer format is one token (the system prompt costs ~60), numbers go
    # digit by digit as in Qwen2, and nothing falls back to bytes.
    assert len(ids) < 200
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert all(len(t.lstrip("Ġ")) <= 1 for t in tokens if any(c.isdigit() for c in t))
    assert tokenizer.decode(ids, skip_special_tokens=False).count("<|im_start|>") == 3
    assert tokenizer.decode(tokenizer(row["question"]).input_ids) == row["question"]


def test_cold_start_writer_stops_early_in_most_two_step_solutions_and_nowhere_else(tmp_path):
    folder = miniature.write_dataset(tmp_path / "data", seed=0, n_train=1000, n_test=10)
    written = miniature.write_cold_start(tmp_path / "cold", folder, seed=0)
    true_rows = read_jsonl(folder / "train.jsonl")[0]
    cold_rows = read_jsonl(written / "train.jsonl")[0]
    assert [r["question"] for r in cold_rows] == [r["question"] for r in true_rows]
    two_step = skipped = 0
    for true, cold in zip(true_rows, cold_rows):
        if true["answer"].count("<<") == 1:
            assert cold == true  # one-step solutions are always right
            continue
        two_step += 1
        if cold != true:
            skipped += 1
            first_step, gold = cold["answer"].split("\n#### ")
            assert first_step == true["answer"].splitlines()[0] and first_step.endswith(f">>{gold} " + first_step.split()[-1])
            assert gold != true["answer"].split("#### ")[1]  # every second step changes the number
    assert two_step > 0.4 * len(true_rows)
    assert abs(skipped / two_step - miniature.SKIPPED_STEP_SHARE) < 0.06
    # sft.py reads the folder as GSM8K: the answer it learns to write is the writer's, not the true one.
    assert data.load_raw_split(str(written), "train")[0]["answer"] == cold_rows[0]["answer"]


# The generator's five question templates, as patterns: a hand-written problem must match none of them.
TEMPLATES = [
    r"\w+ has \d+ \w+ and buys \d+ more\. How many",
    r"\w+ had \d+ \w+ and gave \d+ to \w+\. How many",
    r"\w+ buys \d+ \w+ with \d+ \w+ in each\. How many",
    r"\w+ has \d+ \w+ and finds \d+ more, then gives \d+ to \w+\. How many",
    r"\w+ buys \d+ \w+ with \d+ \w+ in each and already had \d+ \w+\. How many",
]


def test_hand_written_problems_are_in_words_the_generator_never_uses_and_their_gold_is_right():
    rows = read_jsonl(data.SAMPLE_DATA_DIR.parent / "handwritten" / "test.jsonl")[0]
    assert len(rows) == 40 and sum("\n" in row["answer"].split("####")[0].strip() for row in rows) == 24
    generated = {row["question"] for seed in (0, 1, 2) for row in miniature.make_splits(seed, 2000, 200)["test"]}
    for row in rows:
        assert row["question"] not in generated and not any(re.match(t, row["question"]) for t in TEMPLATES), row
        steps = miniature.ANNOTATION.findall(row["answer"])
        assert row["answer"].endswith(f"#### {miniature.evaluate_expression(steps[-1])}")
    # ...while the patterns do catch every generated question (so the check above can fail)
    assert all(any(re.match(t, question) for t in TEMPLATES) for question in generated)
