"""export_gguf.py checked by llama.cpp itself: llama-cpp-python, built from PyPI's source by
requirements-vllm-cpu.txt, loads each exported file, tokenizes the chat prompts and decodes greedily, next to
transformers on the folder the file came from. The real SmolLM2 (fetch_model.py) and tiny random Qwen2 and Llama
models, a LoRA adapter included. Without llama-cpp-python the llama.cpp tests skip, except under CI (CI set),
where they fail; the bad-input tests need no llama.cpp. `python tests/test_export_gguf.py` prints the figures of
docs/BENCHMARKS.md: every --outtype of SmolLM2 on 24 problems.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED
from helpers import write_random_adapter

from machine import is_installed
from prompts import build_messages

PROBLEMS = 24
NEW_TOKENS = 48
# f32 and f16 may part from transformers only where its two best next tokens are this close (logits).
NEAR_TIE = 0.1


@pytest.fixture(scope="module")
def llama_cpp():
    if not is_installed("llama_cpp"):
        reason = "llama-cpp-python is not installed (requirements-vllm-cpu.txt builds it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def questions(count: int) -> list[str]:
    """The first `count` real GSM8K test questions (../shared), else the shipped samples (24 of them)."""
    from data import SAMPLE_DATA_DIR
    from run_metrics import read_jsonl

    real = SHARED / "data" / "gsm8k" / "test.jsonl"
    files = [real] if real.is_file() else [SAMPLE_DATA_DIR / "test.jsonl", SAMPLE_DATA_DIR / "train.jsonl"]
    return [row["question"] for file in files for row in read_jsonl(file)[0]][:count]


def export(checkpoint, output, *args):
    """`python export_gguf.py CHECKPOINT --output OUTPUT ARGS...`, which must succeed; returns OUTPUT."""
    done = subprocess.run(
        [sys.executable, str(REPO / "export_gguf.py"), str(checkpoint), "--output", str(output), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and output.is_file(), done.stderr[-3000:]
    return output


def probe(gguf, texts: list[str], new_tokens: int) -> dict:
    """llama.cpp's ids for each text and its greedy answer ids (tests/llama_cpp_probe.py, a process of its own)."""
    prompts = gguf.with_suffix(".prompts.json")
    prompts.write_text(json.dumps(texts))
    script = REPO / "tests" / "llama_cpp_probe.py"
    done = subprocess.run(
        [sys.executable, str(script), str(gguf), str(prompts), str(new_tokens)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread for the block: on a busy 2-core machine two threads made the reference 10x slower."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class Reference:
    """transformers on a model folder (an adapter merged in): chat prompts, their ids and greedy answer ids."""

    def __init__(self, model, questions_: list[str], new_tokens: int, adapter=None):
        from generation import ModelSource, generate_hf, load_tokenizer

        tokenizer_folder = adapter or model
        self.tokenizer = load_tokenizer(str(tokenizer_folder))
        self.model, self.adapter = str(model), adapter and str(adapter)
        messages = [build_messages(q) for q in questions_]
        self.texts = [
            self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages
        ]
        self.ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in self.texts]
        source = ModelSource("tuned", self.model, str(tokenizer_folder), adapter=self.adapter)
        with one_torch_thread():
            self.greedy = [c.token_ids for c in generate_hf(source, messages, new_tokens, batch_size=len(messages))]

    def divergence_gaps(self, greedy: list[list[int]], answers: list[list[int]]) -> list[float]:
        """For each answer unlike transformers' (`greedy`), the gap between transformers' two best logits where
        they part."""
        import torch

        from generation import ModelSource, load_hf_model

        differing = [(ids, ours, theirs) for ids, ours, theirs in zip(self.ids, greedy, answers) if ours != theirs]
        if not differing:
            return []
        model = load_hf_model(ModelSource("tuned", self.model, self.model, adapter=self.adapter))
        gaps = []
        for ids, ours, theirs in differing:
            k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            with torch.inference_mode(), one_torch_thread():
                top = model(torch.tensor([ids + ours[:k]])).logits[0, -1].topk(2).values
            gaps.append((top[0] - top[1]).item())
        return gaps


def agreement(reference: Reference, run: dict) -> tuple[int, list[float]]:
    """How many of llama.cpp's greedy answers in `run` equal transformers' token for token, and the near-tie gaps
    where they part. transformers' answers are cut where llama.cpp stops: at every token llama.cpp counts as an end
    of generation (`<|endoftext|>` too), where transformers stops at eos and the end of turn only."""
    stops = set(run["eog"])
    ends = [next((k + 1 for k, token in enumerate(ids) if token in stops), len(ids)) for ids in reference.greedy]
    greedy = [ids[:end] for ids, end in zip(reference.greedy, ends)]
    same = sum(ours == theirs for ours, theirs in zip(greedy, run["greedy"]))
    return same, reference.divergence_gaps(greedy, run["greedy"])


# --- the real SmolLM2 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm(real_model, llama_cpp, tmp_path_factory):
    """SmolLM2 exported as f32, f16 and q8_0, transformers' reference on 24 problems, and llama.cpp's answers."""
    from fetch_model import CHECK_QUESTION

    folder = tmp_path_factory.mktemp("smollm-gguf")
    files = {kind: folder / f"smollm2-{kind}.gguf" for kind in ("f32", "f16", "q8_0")}
    for kind, path in files.items():
        export(real_model, path, "--outtype", kind)
    reference = Reference(real_model, questions(PROBLEMS), NEW_TOKENS)
    check_prompt = reference.tokenizer.apply_chat_template(
        [{"role": "user", "content": CHECK_QUESTION}], tokenize=False, add_generation_prompt=True
    )
    runs = {kind: probe(files[kind], reference.texts + [check_prompt], NEW_TOKENS) for kind in ("f32", "f16")}
    runs["q8_0"] = probe(files["q8_0"], reference.texts[:4], NEW_TOKENS)
    return {"files": files, "reference": reference, "runs": runs}


def test_llama_cpp_reads_a_gpt2_vocabulary_with_smollm_s_split_and_im_end_as_eos(smollm, real_model):
    metadata = smollm["runs"]["f16"]["metadata"]
    assert (metadata["tokenizer.ggml.model"], metadata["tokenizer.ggml.pre"]) == ("gpt2", "smollm")
    assert metadata["tokenizer.ggml.eos_token_id"] == "2"  # <|im_end|>: the end of every answer in ChatML
    assert metadata["tokenizer.chat_template"] == smollm["reference"].tokenizer.chat_template
    assert (metadata["general.architecture"], metadata["llama.block_count"]) == ("llama", "30")


def test_llama_cpp_tokenizes_every_chat_prompt_as_transformers_does(smollm):
    reference = smollm["reference"]
    for kind, run in smollm["runs"].items():
        assert run["tokens"][: len(reference.ids)] == reference.ids[: len(run["tokens"])], kind


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_greedy_tokens_equal_transformers_but_at_near_ties(smollm, kind):
    reference = smollm["reference"]
    same, gaps = agreement(reference, smollm["runs"][kind])
    assert same >= len(reference.ids) - 2 and all(gap < NEAR_TIE for gap in gaps), (same, gaps)


def test_a_short_answer_stops_at_the_end_of_turn(smollm):
    """A GGUF whose eos is not the chat template's end of turn never stops: llama.cpp would write on."""
    for kind in ("f32", "f16"):
        answer = smollm["runs"][kind]["greedy"][-1]
        assert len(answer) < NEW_TOKENS and answer[-1] == 2, (kind, answer)


def test_q8_0_loads_and_answers_like_transformers_but_for_rounding(smollm):
    reference = smollm["reference"]
    answers = smollm["runs"]["q8_0"]["greedy"]
    assert all(len(answer) > 4 for answer in answers)
    assert smollm["files"]["q8_0"].stat().st_size < 0.3 * smollm["files"]["f32"].stat().st_size
    _, gaps = agreement(reference, smollm["runs"]["q8_0"])  # the first len(answers) problems
    assert all(gap < 0.5 for gap in gaps), gaps  # 8-bit weights move logits by tenths, not more


def test_fetch_model_reads_the_export_back_into_the_folder_s_logits(smollm, real_model):
    """The round trip: the f32 file through fetch_model.py's reader (its metadata, then transformers' GGUF loader,
    which undoes Llama's q/k reordering and the renaming) gives the folder's logits back. (By hand, the whole
    `fetch_model.py --gguf` of the f16 file: see docs/BENCHMARKS.md.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from fetch_model import CHECK_TEXT, read_metadata

    path = smollm["files"]["f32"]
    assert read_metadata(path)["special_ids"]["eos_token"] == 2
    ids = smollm["reference"].tokenizer(CHECK_TEXT, return_tensors="pt").input_ids
    with torch.inference_mode(), one_torch_thread():
        exported = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()(ids).logits
        original = AutoModelForCausalLM.from_pretrained(real_model).eval()(ids).logits
    assert (exported - original).abs().max().item() < 1e-4


# --- tiny random models and a LoRA adapter --------------------------------------------------------------------


def build_tiny(folder, family: str):
    """A tiny random `family` model with wide weights (std 0.3, biases too, so a misplaced tensor shows), and the
    real Qwen2.5 tokenizer (../shared) for Qwen2 where it is at hand, else tiny_model's."""
    import torch
    from transformers import AutoTokenizer

    import tiny_model

    qwen = SHARED / "tokenizers" / "qwen2.5"
    if family == "qwen2" and qwen.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(qwen)
    else:
        tokenizer = tiny_model.build_tiny_tokenizer(family=family)
    model = tiny_model.build_causal_lm(tokenizer, family=family)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2 or name.endswith(".bias"):
                weight.normal_(0.0, 0.3, generator=generator)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-gguf")
    return {family: build_tiny(root / family, family) for family in ("qwen2", "llama")}


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_tiny_models_in_f32_and_f16_answer_as_transformers_does(tiny_models, llama_cpp, family, tmp_path):
    reference = Reference(tiny_models[family], questions(8), NEW_TOKENS)
    for kind in ("f32", "f16"):
        gguf = export(tiny_models[family], tmp_path / f"{kind}.gguf", "--outtype", kind)
        run = probe(gguf, reference.texts, NEW_TOKENS)
        assert run["tokens"] == reference.ids, kind
        same, gaps = agreement(reference, run)
        # Random logits over many tokens hold near-ties often, and random wide weights carry f16's rounding further
        # than trained ones (up to 0.12 measured): a wider tie for f16, and fewer whole answers alike (3 of 8 with
        # tiny_model's tokenizer, where ../shared is absent); any other parting is an error.
        tie, alike = (NEAR_TIE, len(reference.ids) // 2) if kind == "f32" else (3 * NEAR_TIE, len(reference.ids) // 4)
        assert same >= alike and all(gap < tie for gap in gaps), (kind, same, gaps)


def test_a_lora_adapter_is_merged_into_the_file(tiny_models, llama_cpp, tmp_path):
    """The adapter's own answers, not the base model's: it changes every greedy answer here (lora_B at std 1)."""
    base = tiny_models["qwen2"]
    adapter = write_random_adapter(base, tmp_path / "adapter", ["q_proj", "v_proj"], std=1.0)
    export(adapter, tmp_path / "tuned.gguf", "--outtype", "f32")
    reference = Reference(base, questions(4), 16, adapter=adapter)
    run = probe(tmp_path / "tuned.gguf", reference.texts, 16)
    assert agreement(reference, run) == (len(reference.ids), [])
    assert run["greedy"] != Reference(base, questions(4), 16).greedy


def test_the_modelfile_holds_the_template_stops_and_training_system_prompt(tiny_models, tmp_path):
    from prompts import SYSTEM_PROMPT

    export(tiny_models["llama"], tmp_path / "m.gguf", "--outtype", "q8_0")
    text = (tmp_path / "Modelfile").read_text()
    assert "FROM ./m.gguf\n" in text and 'PARAMETER stop "<|im_end|>"\n' in text
    assert f'SYSTEM """{SYSTEM_PROMPT}"""\n' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert template.startswith("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}")
    assert template.endswith('{{ end }}{{ end }}<|im_start|>assistant\n')


def test_eos_is_the_chat_template_s_end_of_turn_whatever_eos_the_tokenizer_has():
    """A base Qwen2.5 tokenizer's eos is <|endoftext|>, while its chat template ends answers with <|im_end|>."""
    import tiny_model
    from gguf_tokenizer import gguf_vocab

    tokenizer = tiny_model.build_tiny_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    vocab = gguf_vocab(tokenizer, len(tokenizer))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert vocab.special_ids["eos"] == vocab.special_ids["eot"] == im_end
    assert vocab.stop_tokens == ["<|im_end|>", "<|endoftext|>"]


# --- bad input: one line, exit 2, nothing written -----------------------------------------------------------


def error_line(*argv) -> str:
    """export_gguf.main(ARGV) in this process: it must exit with code 2 and one error line (after argparse's usage
    lines, for a flag argparse refuses)."""
    import export_gguf

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        export_gguf.main([str(arg) for arg in argv])
    text = stderr.getvalue()
    lines = text.split("usage:", 1)[0].splitlines() + text.splitlines()[-1:] if "usage:" in text else text.splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("export_gguf.py: error: "), text
    return lines[0]


def test_bad_input_is_one_line_before_any_weight_loads(tiny_models, tmp_path):
    model = tiny_models["llama"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "out.gguf").mkdir()
    assert "give the checkpoint to export" in error_line()
    assert "no such folder" in error_line(tmp_path / "missing")
    assert "neither a LoRA adapter" in error_line(tmp_path / "empty")
    assert "is a folder" in error_line(model, "--output", tmp_path / "out.gguf")
    assert "name a .gguf file" in error_line(model, "--output", tmp_path / "model.bin")
    assert "invalid choice: 'q4_k'" in error_line(model, "--outtype", "q4_k")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "out.gguf"]  # nothing written


def test_another_architecture_is_refused_before_anything_is_written(tiny_models, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_models["llama"], tmp_path / "mistral")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))
    line = error_line(folder, "--output", tmp_path / "out" / "m.gguf")
    assert line.endswith("exports LlamaForCausalLM, Qwen2ForCausalLM") and "MistralForCausalLM" in line
    assert not (tmp_path / "out").exists()


def test_an_adapter_on_a_4_bit_base_is_refused(tiny_models, tmp_path):
    """Merged there, the tuned weights would be rounded to the base's 4-bit grid: the adapter lost in part."""
    import shutil

    base = shutil.copytree(tiny_models["qwen2"], tmp_path / "base-4bit")
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    adapter = write_random_adapter(tiny_models["qwen2"], tmp_path / "adapter", ["q_proj"], std=1.0)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": str(base)}))
    assert "is stored in 4 bits" in error_line(adapter, "--output", tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def report(count: int = PROBLEMS) -> None:
    """docs/BENCHMARKS.md's figures: SmolLM2 exported in every --outtype, each against transformers on `count`
    GSM8K problems (tokenization, 48 greedy tokens, the near-tie gaps where they part) and the export's time."""
    import tempfile
    import time
    from pathlib import Path

    from conftest import REAL_MODEL_DIR

    reference = Reference(REAL_MODEL_DIR, questions(count), NEW_TOKENS)
    print(f"SmolLM2 ({REAL_MODEL_DIR}), {count} problems, {NEW_TOKENS} greedy tokens, against transformers (f32)")
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("f32", "f16", "bf16", "q8_0"):
            started = time.perf_counter()
            path = export(REAL_MODEL_DIR, Path(folder) / f"{kind}.gguf", "--outtype", kind)
            seconds = time.perf_counter() - started
            run = probe(path, reference.texts, NEW_TOKENS)
            same_tokens = sum(a == b for a, b in zip(run["tokens"], reference.ids))
            same, gaps = agreement(reference, run)
            size = path.stat().st_size / 1e6
            gap_list = ", ".join(f"{gap:.3f}" for gap in gaps) or "-"
            print(f"{kind:>5}: export {seconds:5.1f} s, {size:6.1f} MB; tokenization {same_tokens}/{count}, "
                  f"greedy {same}/{count}; top-2 gaps where they part: {gap_list}")  # fmt: skip


if __name__ == "__main__":
    report()
