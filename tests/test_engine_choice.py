"""engine_choice.py: which engine evaluate.py generates with, and the CPU time it warns of."""

import pytest

import engine_choice
from engine_choice import (
    REFERENCE,
    REFERENCE_PARAMETERS,
    TRANSFORMERS_CPU,
    VLLM_CPU,
    EngineSpeed,
    ModelShape,
    choose_engine,
    cpu_time_warning,
    model_shape,
)
from evaluate import main

# A stand-in pair shaped like the CPU's: vLLM starts 30 s later but decodes 256 sequences at once.
QUICK_START = EngineSpeed("hf", start_seconds=10, fixed_start_seconds=2, tokens_per_second={32: 40.0}, concurrency=32)
WIDE_DECODE = EngineSpeed(
    "vllm", start_seconds=40, fixed_start_seconds=25, tokens_per_second={32: 40.0, 256: 120.0}, concurrency=256
)


@pytest.fixture
def cpu_engines(monkeypatch):
    monkeypatch.setattr(engine_choice, "CPU_ENGINES", {"hf": QUICK_START, "vllm": WIDE_DECODE})


def test_a_requested_engine_is_kept_and_cuda_takes_vllm_when_installed():
    assert choose_engine("hf", on_cuda=True, vllm_installed=True) == ("hf", "--backend hf")
    assert choose_engine("vllm", on_cuda=False, vllm_installed=True)[0] == "vllm"
    assert choose_engine("auto", on_cuda=True, vllm_installed=True) == ("vllm", "CUDA GPU")
    assert choose_engine("auto", on_cuda=True, vllm_installed=False) == ("hf", "vllm is not installed")


def test_the_cpu_takes_transformers_when_vllm_cannot_run_the_model(cpu_engines):
    problem = "vLLM's CPU attention takes head sizes 32, 64; m has 16"
    assert choose_engine("auto", False, True, problem, prompts=10**6) == ("hf", problem)


def test_the_cpu_takes_the_engine_that_finishes_first(cpu_engines):
    # A few prompts: vLLM's start is not paid back. All 1319 GSM8K problems: its wide decode is.
    engine, why = choose_engine("auto", False, True, prompts=32, max_new_tokens=64)
    assert engine == "hf" and why.startswith("faster on the CPU here: ~") and why.endswith("with vllm")
    assert choose_engine("auto", False, True, prompts=1319, max_new_tokens=200)[0] == "vllm"
    # Base and adapter are two transformers loads but one vLLM engine: the estimate counts each engine's starts.
    assert QUICK_START.seconds(64, 8, 2, REFERENCE) - QUICK_START.seconds(64, 8, 1, REFERENCE) > 0


def test_the_decode_rate_follows_the_measured_points():
    assert WIDE_DECODE.rate(32) == pytest.approx(40.0)
    assert WIDE_DECODE.rate(256) == pytest.approx(120.0)
    assert WIDE_DECODE.rate(10_000) == pytest.approx(120.0)  # at most 256 at once
    assert WIDE_DECODE.rate(8) == pytest.approx(10.0)  # a step costs the same below 32
    assert 40.0 < WIDE_DECODE.rate(144) < 120.0
    # Twice the weights, the same cache: the step takes as much longer as it reads more.
    double = ModelShape(2 * REFERENCE_PARAMETERS, REFERENCE.kv_bytes_per_token)
    weights, context = 4 * REFERENCE_PARAMETERS, 256 * REFERENCE.kv_bytes_per_token * (200 + 64 / 2)
    assert WIDE_DECODE.rate(256, double) == pytest.approx(120.0 * (weights + context) / (2 * weights + context))
    # Longer completions: a longer mean context to read at every step.
    assert WIDE_DECODE.rate(256, REFERENCE, 512) < WIDE_DECODE.rate(256, REFERENCE, 64)


def test_the_reference_model_reproduces_the_measured_rates():
    qwen = {"num_hidden_layers": 24, "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2}
    assert model_shape(REFERENCE_PARAMETERS, qwen) == REFERENCE
    assert TRANSFORMERS_CPU.rate(32, REFERENCE, 64) == pytest.approx(40.0)
    assert VLLM_CPU.rate(32, REFERENCE, 64) == pytest.approx(67.1)
    assert VLLM_CPU.rate(256, REFERENCE, 64) == pytest.approx(69.6)


SMOLLM2 = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3}


def test_another_model_is_estimated_from_what_a_step_costs_on_each_engine():
    # SmolLM2-135M: 3.7x fewer weights than the reference, 1.9x its KV cache per token, 30 layers. Measured with
    # evaluate.py on 2 cores: 32 GSM8K problems x 128 tokens at 78.7 tokens/s (transformers) and 148.1 (vLLM);
    # 500 problems x 256 tokens at 228.2 with vLLM (256 sequences at once).
    smol = model_shape(134_515_008, SMOLLM2)
    assert (smol.kv_bytes_per_token, smol.layers) == (46_080, 30)
    for engine, measured in ((TRANSFORMERS_CPU, 78.7), (VLLM_CPU, 148.1)):
        by_parameters = engine.rate(32) * REFERENCE_PARAMETERS / smol.parameters
        assert by_parameters > 1.35 * measured  # parameters alone: far off
        assert abs(engine.rate(32, smol, 128) - measured) < 0.2 * measured
    assert abs(VLLM_CPU.rate(256, smol, 256) - 228.2) < 0.15 * 228.2
    # So all 1319 test problems go to vLLM, which took 458 s for 500 of them where transformers would take ~20 min.
    assert choose_engine("auto", False, True, prompts=1319, max_new_tokens=256, model=smol)[0] == "vllm"


def test_a_model_shape_without_a_config_scales_the_reference_cache_by_parameters():
    assert model_shape(None, SMOLLM2) == REFERENCE
    half = model_shape(REFERENCE_PARAMETERS // 2, None)
    assert half.kv_bytes_per_token == pytest.approx(REFERENCE.kv_bytes_per_token / 2)
    assert model_shape(REFERENCE_PARAMETERS // 2, {"model_type": "x"}) == half
    assert TRANSFORMERS_CPU.rate(32, half) == pytest.approx(2 * 40.0)


def test_a_long_cpu_evaluation_warns_with_the_time_to_expect(cpu_engines):
    assert cpu_time_warning("hf", 300, 512) is None  # a few hundred completions: no warning
    warning = cpu_time_warning("hf", 2 * 1319, 512, REFERENCE, starts=2)
    rate = QUICK_START.rate(32, REFERENCE, 512)
    hours = (2 * 10 + 2 * 1319 * 512 / rate) / 3600
    assert "2638 completions on the CPU with hf, up to 512 tokens each" in warning
    assert f"up to {hours:.1f} hours" in warning and "--limit N" in warning
    assert f"at ~{rate:.3g} tokens/s for a 0.49B-parameter model (measured: 40 tokens/s for 0.5B" in warning
    larger = cpu_time_warning("hf", 2 * 1319, 512, model_shape(2 * REFERENCE_PARAMETERS, None), starts=2)
    assert f"at ~{rate / 2:.3g} tokens/s for a 0.99B-parameter model" in larger
    assert "with vllm" in cpu_time_warning("vllm", 2 * 1319, 512, REFERENCE)
    assert cpu_time_warning("hf", 2 * 1319, 512, model_shape(1_000_000, None), starts=2) is None  # a tiny model is quick


@pytest.mark.slow
def test_evaluate_says_which_engine_and_why_and_warns_before_generating(monkeypatch, tmp_path, capsys):
    # Thresholds lowered so that two completions of the tiny model count as a long CPU evaluation.
    monkeypatch.setattr(engine_choice, "CPU_WARNING_COMPLETIONS", 1)
    monkeypatch.setattr(engine_choice, "CPU_WARNING_MINUTES", 0)
    main(["--smoke", "--limit", "2", "--output_dir", str(tmp_path)])
    log = capsys.readouterr().err
    reasons = ("(vllm is not installed)", "(vLLM's CPU attention takes head sizes")
    assert any(f"backend hf {reason}" in log for reason in reasons), log
    assert "warning: 2 completions on the CPU with hf, up to 32 tokens each" in log
    assert log.index("warning: 2 completions") < log.index("base: generating")
    assert "base: " in log and " tokens/s), after " in log  # the speed line


def test_a_whole_evaluation_on_the_cpu_reserves_a_bounded_kv_cache():
    # SmolLM2 on GSM8K's 500 problems reserved 6 GB of KV cache on a 24 GB machine and peaked at 7.8 GB.
    from vllm_generation import CPU_KV_CACHE_MAX_BYTES, cpu_kv_cache_bytes

    smollm2 = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3}
    reserved = cpu_kv_cache_bytes(smollm2, prompts=500, max_model_len=493, available=24 * 2**30)
    assert reserved <= CPU_KV_CACHE_MAX_BYTES <= 1.5e9
    one_sequence = cpu_kv_cache_bytes(smollm2, prompts=1, max_model_len=493, available=24 * 2**30)
    assert reserved >= 32 * one_sequence  # still dozens of sequences at once
    assert cpu_kv_cache_bytes(smollm2, prompts=4, max_model_len=493, available=24 * 2**30) == 4 * one_sequence
