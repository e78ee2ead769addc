"""bench/gpu_bench.py: the hardware arithmetic (roofline.py, bench/gpu_report.py) by hand, and the CPU toy run."""

import json
import sys

import pytest
from conftest import REPO
from helpers import run_script

sys.path.insert(0, str(REPO / "bench"))
import gpu_bench
from gpu_report import TRAIN_PATH, epoch_steps, estimate_epoch, project_seconds

from roofline import (
    KNOWN_GPUS,
    decode_limit_seconds,
    decode_limit_tokens_per_s,
    find_gpu,
    kv_bytes_per_token,
    training_flops,
)

from data import SAMPLE_DATA_DIR
from tiny_model import QWEN25_05B_SHAPE

# Qwen2.5-0.5B: 136,134,656 embedding (tied) + 24 x 14,912,384 per layer + 896 final norm.
QWEN_PARAMS = 494_032_768


def test_kv_cache_bytes_per_token_of_qwen_in_bf16():
    # 2 (K, V) x 24 layers x 2 KV heads x 64 head_dim x 2 bytes
    assert kv_bytes_per_token(24, 2, 64, 2) == 12_288


def test_decode_limit_is_bandwidth_over_bytes_read_per_step():
    # 1 GB of weights at 1 TB/s, no KV cache: 1000 steps/s, one token each
    assert decode_limit_tokens_per_s(1, 1e12, 1e9, 0, 0) == pytest.approx(1000)
    # Qwen in bf16 on an H100 SXM, batch 64 at context 456: 988,065,536 + 12,288 x 456 x 64 = 1,346,678,528 bytes
    # per step, 64 tokens per step: 64 x 3.35e12 / 1,346,678,528 = 159,206.6 tokens/s
    assert decode_limit_tokens_per_s(64, 3.35e12, QWEN_PARAMS * 2, 12_288, 456) == pytest.approx(159_206.6, abs=0.1)


def test_decode_limit_seconds_uses_the_average_context():
    # context 100 + 10 / 2 = 105; bytes per step 1e6 + 1000 x 105 x 2 = 1.21e6: 1.21 ms per step, 10 steps
    assert decode_limit_seconds(2, 100, 10, 1e9, 1e6, 1000) == pytest.approx(0.0121)


def test_training_flops_count_the_passes():
    # forward + backward (2 passes) + checkpointing recompute + reference forward: 4 passes of 2 x params per token
    assert training_flops(1_000_000, 1000, gradient_checkpointing=True, beta=0.04) == 8e9
    assert training_flops(1_000_000, 1000, gradient_checkpointing=False, beta=0.0) == 4e9


def test_epoch_steps_drop_the_incomplete_last_batch():
    assert epoch_steps(7473, 32) == 233  # the blog's 32 prompts (64 completions) per optimizer step
    assert epoch_steps(7473, 2) == 3736


def test_projection_scales_only_the_limit_time():
    assert project_seconds(10.0, 2.0, 3.0) == 14.0  # 8 s of overhead kept, 2 s at the limit -> 6 s
    assert project_seconds(10.0, 2.0, 1.0) == 10.0


def test_epoch_estimate_measured_and_projected_to_a_3090():
    result = {
        "prompts_per_step": 32,
        "generation_s_per_step": 10.0,
        "rest_s_per_step": 5.0,
        "generation_limit_s_per_step": 1.0,
        "rest_limit_s_per_step": 0.5,
        "peak_reserved_bytes": 20 * 2**30,
    }
    h100 = {"bandwidth": 3.35e12, "bf16_flops": 989e12}
    estimate = estimate_epoch(result, h100)
    assert estimate["steps"] == 233 and estimate["measured_s"] == pytest.approx(233 * 15.0)
    projected = estimate["projected"]
    # generation: 10 + 1 x (3350 / 936 - 1) = 12.5791; rest: 5 + 0.5 x (989 / 71 - 1) = 11.4648
    assert projected["generation_s_per_step"] == pytest.approx(12.5791, abs=1e-4)
    assert projected["rest_s_per_step"] == pytest.approx(11.4648, abs=1e-4)
    assert projected["epoch_s"] == pytest.approx(233 * (12.5791 + 11.4648), abs=0.1)
    assert projected["epoch_s_all_generation_scaled"] == pytest.approx(233 * (10 * 3350 / 936 + 11.4648), abs=0.1)
    assert projected["peak_memory_fits"] is True


def test_epoch_estimate_without_known_limits_is_measured_only():
    result = {
        "prompts_per_step": 32,
        "generation_s_per_step": 1.0,
        "rest_s_per_step": 1.0,
        "generation_limit_s_per_step": None,
        "rest_limit_s_per_step": None,
        "peak_reserved_bytes": None,
    }
    estimate = estimate_epoch(result, {"bandwidth": None, "bf16_flops": None})
    assert estimate == {"steps": 233, "measured_s": 466.0, "projected": None}


def test_every_known_gpu_can_be_found():
    # The first entry whose words all appear wins: an entry listed after a looser one ("A10" before "A10G",
    # "H100" before "H100 PCIE") would never be found.
    for words, spec in KNOWN_GPUS:
        assert find_gpu(" ".join(words).lower()) is spec, spec.name


@pytest.mark.parametrize(
    "name, variant_of",
    [
        ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3"),  # PCIe and SXM: not the same memory bandwidth
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB"),
        ("NVIDIA GeForce RTX 3090 Ti", "NVIDIA GeForce RTX 3090"),
        ("NVIDIA L40S", "NVIDIA L4"),
        ("NVIDIA A10G", "NVIDIA A10"),
    ],
)
def test_variants_of_a_gpu_are_told_apart_by_their_device_names(name, variant_of):
    spec, other = find_gpu(name), find_gpu(variant_of)
    assert spec is not None and other is not None and spec is not other


def test_unknown_gpu_has_no_limits():
    assert find_gpu("Tesla T4") is None


def test_qwen_shape_has_the_real_parameter_count():
    import torch

    from tiny_model import build_qwen2_model

    class Tokenizer:  # what build_qwen2_model reads from a tokenizer
        eos_token_id, pad_token_id = 151645, 151643

        def __len__(self):
            return 151665

    with torch.device("meta"):  # shapes only, no memory
        model = build_qwen2_model(Tokenizer(), QWEN25_05B_SHAPE)
    assert sum(p.numel() for p in model.parameters()) == QWEN_PARAMS


def test_cpu_defaults_are_toy_sizes_without_shared_files(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_bench, "DEFAULT_TOKENIZER", tmp_path / "missing")
    monkeypatch.setattr(gpu_bench, "DEFAULT_DATASET", tmp_path / "missing")
    args = gpu_bench.resolve_args(gpu_bench.parse_args([]), cuda=False)
    assert args.toy and args.tokenizer == "tiny" and args.dataset_name == str(SAMPLE_DATA_DIR)
    assert args.batch_sizes == gpu_bench.TOY_BATCH_SIZES and args.max_new_tokens == gpu_bench.TOY_MAX_NEW_TOKENS


def test_gpu_defaults_are_the_real_sizes(monkeypatch, tmp_path):
    (tmp_path / "tok").mkdir()
    monkeypatch.setattr(gpu_bench, "DEFAULT_TOKENIZER", tmp_path / "tok")
    args = gpu_bench.resolve_args(gpu_bench.parse_args([]), cuda=True)
    assert not args.toy and args.tokenizer == str(tmp_path / "tok")
    assert args.batch_sizes == [1, 8, 16, 32, 64] and args.max_new_tokens == 512


def test_gpu_run_without_a_tokenizer_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_bench, "DEFAULT_TOKENIZER", tmp_path / "missing")
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.resolve_args(gpu_bench.parse_args([]), cuda=True)
    assert exit_info.value.code == 2 and "pass --tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_toy_run_prints_and_writes_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    result = run_script(
        "bench/gpu_bench.py", "--toy", "--tokenizer", "tiny", "--dataset_name", SAMPLE_DATA_DIR,
        "--num_prompts", "4", "--batch_sizes", "1", "2", "--max_new_tokens", "8", "--train_steps", "1",
        "--bandwidth_gbs", "20", "--tflops", "1", "--output_json", output,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("eval (measured)", "train (measured)", "limit tok/s", "measured  (CPU", "projected (RTX 3090"):
        assert heading in result.stdout, heading
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch estimate (") and "(measured)" in last and "RTX 3090 (projected)" in last
    assert TRAIN_PATH in last  # which generation path the estimate is for, said plainly

    report = json.loads(output.read_text())
    assert set(report) == {"device", "model", "settings", "eval", "train", "epoch", "headline"}
    assert report["headline"] == last and report["settings"]["toy"] is True
    assert [row["batch_size"] for row in report["eval"]] == [1, 2]
    for row in report["eval"]:
        assert row["prompts"] == 4 and 0 < row["generated_tokens"] <= 4 * 8
        for key in ("wall_s", "tokens_per_s", "limit_tokens_per_s", "percent_of_limit", "test_set_s"):
            assert row[key] > 0, key
    train = report["train"]
    assert train["prompts_per_step"] == 2 and train["completions_per_step"] == 4
    for key in ("seconds_per_step", "generation_s_per_step", "rest_s_per_step", "generation_tokens_per_s",
                "generation_limit_s_per_step", "rest_limit_s_per_step", "trl_step_time_s"):  # fmt: skip
        assert train[key] > 0, key
    assert train["seconds_per_step"] == pytest.approx(train["generation_s_per_step"] + train["rest_s_per_step"])
    assert report["epoch"]["steps"] == 3736 and report["epoch"]["measured_s"] > 0
    assert report["epoch"]["projected"]["epoch_s"] > 0


def test_nothing_to_measure_is_an_error():
    result = run_script("bench/gpu_bench.py", "--skip_eval", "--skip_train")
    assert result.returncode == 2 and "nothing to measure" in result.stderr
