"""prompts.py and data.py: the shared prompt, GSM8K loading from local sources, and clear errors."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, SHARED

import data
from data import DatasetError, extract_hash_answer, get_gsm8k_questions
from prompts import SYSTEM_PROMPT, build_messages

ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A car costs $12,000 and a bike $1,500. Total?", "answer": "12000+1500\n#### 13,500"},
    {"question": "It is 5 degrees and drops 10. Temperature?", "answer": "5-10=-5\n#### -5"},
    {"question": "No hash mark here?", "answer": "just words"},
    {"question": "   ", "answer": "#### 3"},
    {"question": "Empty gold?", "answer": "work ####  "},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_system_prompt_is_the_blogs_text():
    assert SYSTEM_PROMPT.startswith("\nRespond in the following format:\n<reasoning>\n")
    assert "If you see somethin start with 'wait'" in SYSTEM_PROMPT
    assert SYSTEM_PROMPT.endswith("<answer>\n[Final integer answer justified by validate]\n</answer>\n")


def test_build_messages():
    assert build_messages("What is 2+2?") == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2+2?"},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("x\n#### 72", "72"), ("#### 1,450,000", "1,450,000"), ("#### -5 ", "-5"), ("no mark", None), ("", None), (None, None)],
)
def test_extract_hash_answer(text, expected):
    assert extract_hash_answer(text) == expected


def test_pure_modules_do_not_import_heavy_libraries():
    code = "import sys, prompts, data, rewards; print(sorted(m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loads_jsonl_drops_bad_rows_and_reports_once(tmp_path):
    reports = []
    ds = get_gsm8k_questions(dataset_name=str(write_jsonl(tmp_path / "train.jsonl", ROWS)), report=reports.append)
    assert ds["answer"] == ["7", "13,500", "-5"]
    assert ds[0]["prompt"] == build_messages(ROWS[0]["question"])
    assert ds[0]["question"] == ROWS[0]["question"]
    assert len(reports) == 1 and "dropped 3 of 6 rows" in reports[0]


def test_folder_picks_the_split_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "test.jsonl", ROWS[1:3])
    assert get_gsm8k_questions("test", str(tmp_path))["answer"] == ["13,500", "-5"]
    assert get_gsm8k_questions("train", str(tmp_path))["answer"] == ["7"]
    with pytest.raises(DatasetError, match="no file for split 'validation'"):
        get_gsm8k_questions("validation", str(tmp_path))


def test_parquet_and_saved_dataset(tmp_path):
    import datasets

    raw = datasets.Dataset.from_list(ROWS[:3])
    raw.to_parquet(str(tmp_path / "rows.parquet"))
    assert get_gsm8k_questions(dataset_name=str(tmp_path / "rows.parquet"))["answer"] == ["7", "13,500", "-5"]
    datasets.DatasetDict({"train": raw, "test": raw.select([2])}).save_to_disk(str(tmp_path / "saved"))
    assert get_gsm8k_questions("test", str(tmp_path / "saved"))["answer"] == ["-5"]
    raw.save_to_disk(str(tmp_path / "single"))
    assert len(get_gsm8k_questions("train", str(tmp_path / "single"))) == 3


def test_limit_and_seed(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"#### {i}"} for i in range(20)]
    path = str(write_jsonl(tmp_path / "train.jsonl", rows))
    assert get_gsm8k_questions(dataset_name=path, limit=5)["answer"] == ["0", "1", "2", "3", "4"]
    a = get_gsm8k_questions(dataset_name=path, limit=5, seed=1)["answer"]
    assert a == get_gsm8k_questions(dataset_name=path, limit=5, seed=1)["answer"]
    assert a != get_gsm8k_questions(dataset_name=path, limit=5, seed=2)["answer"]
    with pytest.raises(DatasetError, match="positive"):
        get_gsm8k_questions(dataset_name=path, limit=0)


class CharTokenizer:
    """One token per character of the concatenated messages: enough to test the length filter."""

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, return_dict):
        assert add_generation_prompt and tokenize and return_dict is False
        return list("".join(m["content"] for m in messages))


def test_long_prompts_are_dropped_and_counted(tmp_path):
    rows = [{"question": "short?", "answer": "#### 1"}, {"question": "long " * 50, "answer": "#### 2"}]
    reports = []
    budget = len(SYSTEM_PROMPT) + 10
    ds = get_gsm8k_questions(
        dataset_name=str(write_jsonl(tmp_path / "t.jsonl", rows)), max_prompt_tokens=budget,
        tokenizer=CharTokenizer(), report=reports.append,
    )
    assert ds["answer"] == ["1"]
    assert reports == [f"{tmp_path / 't.jsonl'} (train): dropped 1 prompts longer than {budget} tokens"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "missing.jsonl: no such file or folder"),
        (lambda p: write_jsonl(p / "cols.jsonl", [{"q": "x", "a": "#### 1"}]), r"cols.jsonl: missing column\(s\) question, answer \(found: q, a\)"),
        (lambda p: (p / "bad.jsonl").write_text("{not json\n") and p / "bad.jsonl", "bad.jsonl: cannot be read as GSM8K data"),
        (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "x.txt: unsupported file type"),
        (lambda p: p, "no .jsonl, .json or .parquet files"),
        (lambda p: write_jsonl(p / "allbad.jsonl", ROWS[3:]), r"no usable rows left"),
    ],
)
def test_bad_sources_fail_with_one_clear_line(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(DatasetError, match=message) as error:
        get_gsm8k_questions(dataset_name=str(source))
    assert "\n" not in str(error.value)


def test_unreachable_hub_says_so_and_shows_a_local_path():
    with pytest.raises(DatasetError, match="from the Hugging Face hub.*--dataset_name path/to/gsm8k/") as error:
        get_gsm8k_questions(dataset_name="openai/gsm8k")
    assert "\n" not in str(error.value)


def test_source_kind():
    assert not data.is_local_source("openai/gsm8k")
    assert data.is_local_source("./gsm8k") and data.is_local_source("a/b/c") and data.is_local_source("x.jsonl")


@pytest.mark.skipif(not (SHARED / "data" / "gsm8k").is_dir(), reason="../shared/data/gsm8k not present")
def test_real_gsm8k_files():
    test = get_gsm8k_questions("test", str(SHARED / "data" / "gsm8k"))
    train = get_gsm8k_questions("train", str(SHARED / "data" / "gsm8k"))
    assert (len(train), len(test)) == (7473, 1319)
    assert train[0]["answer"] == "72"
    golds = list(train["answer"]) + list(test["answer"])
    assert sum("," in a for a in golds) == 93
    assert sum(a.startswith("-") for a in golds) == 5
