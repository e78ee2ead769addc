"""engine_choice.py: which engine evaluate.py generates with, and the CPU time it warns of."""

import pytest

import engine_choice
from engine_choice import REFERENCE_PARAMETERS, EngineSpeed, choose_engine, cpu_time_warning
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
    assert QUICK_START.seconds(64, 8, 2, REFERENCE_PARAMETERS) - QUICK_START.seconds(64, 8, 1, REFERENCE_PARAMETERS) > 0


def test_the_decode_rate_follows_the_measured_points():
    assert WIDE_DECODE.rate(32, REFERENCE_PARAMETERS) == pytest.approx(40.0)
    assert WIDE_DECODE.rate(256, REFERENCE_PARAMETERS) == pytest.approx(120.0)
    assert WIDE_DECODE.rate(10_000, REFERENCE_PARAMETERS) == pytest.approx(120.0)  # at most 256 at once
    assert WIDE_DECODE.rate(8, REFERENCE_PARAMETERS) == pytest.approx(10.0)  # a step costs the same below 32
    assert 40.0 < WIDE_DECODE.rate(144, REFERENCE_PARAMETERS) < 120.0
    assert WIDE_DECODE.rate(256, 2 * REFERENCE_PARAMETERS) == pytest.approx(60.0)  # twice the weights to read


def test_a_long_cpu_evaluation_warns_with_the_time_to_expect(cpu_engines):
    assert cpu_time_warning("hf", 300, 512) is None  # a few hundred completions: no warning
    warning = cpu_time_warning("hf", 2 * 1319, 512, REFERENCE_PARAMETERS, starts=2)
    hours = (2 * 10 + 2 * 1319 * 512 / 40.0) / 3600
    assert "2638 completions on the CPU with hf, up to 512 tokens each" in warning
    assert f"up to {hours:.1f} hours" in warning and "--limit N" in warning
    larger = cpu_time_warning("hf", 2 * 1319, 512, 2 * REFERENCE_PARAMETERS, starts=2)
    assert "at ~20 tokens/s for a 0.99B-parameter model" in larger
    assert "with vllm" in cpu_time_warning("vllm", 2 * 1319, 512, REFERENCE_PARAMETERS)
    assert cpu_time_warning("hf", 2 * 1319, 512, 1_000_000, starts=2) is None  # a tiny model is quick


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
