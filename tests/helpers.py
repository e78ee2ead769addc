"""Shared test helpers: run the repo's scripts the way a user does."""

import os
import subprocess
import sys

from conftest import REPO


def run_script(script: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python SCRIPT ARGS...` from the repo root, offline; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
