"""What this machine has: a CUDA GPU, bf16 on it, an installed package.

Training (checks.py, backends.py) and evaluation (evaluate.py, ask.py) ask the same questions; torch is imported
inside the functions, so `import machine` costs nothing.
"""

from __future__ import annotations

import importlib.util


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU."""
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """True when the GPU can train in bf16 (Ampere and newer)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def is_installed(package: str) -> bool:
    """True when `package` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # already imported without a spec (a stand-in module)
        return True
