"""The benchmark scripts run end to end at toy size: exit 0, and the last line is a headline ratio."""

import re

import pytest
from helpers import run_script

pytestmark = pytest.mark.slow

HEADLINE = re.compile(r":\s*(\d+(?:\.\d+)?)x\b")
# One torch thread: on a busy 2-core machine two threads can make these runs many times slower.
ONE_THREAD = ("--threads", "1")


def headline_ratio(stdout: str) -> float:
    """The number before the 'x' on the last printed line."""
    last = stdout.strip().splitlines()[-1]
    match = HEADLINE.search(last)
    assert match, f"no ratio on the last line: {last!r}"
    return float(match.group(1))


def test_eval_speed_runs_and_prints_its_headline():
    result = run_script(
        "bench/eval_speed.py", "--n", "4", "--max_new_tokens", "8", "--rounds", "1", "--repeat", "1", *ONE_THREAD
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "check: identical token ids" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("batched vs one-at-a-time:")
    assert headline_ratio(result.stdout) > 0


def test_train_overhead_runs_and_prints_its_headline():
    result = run_script("bench/train_overhead.py", "--max_steps", "2", "--rounds", "1", *ONE_THREAD)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "check: the same per-step rewards" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("train.py vs bare GRPOTrainer:")
    assert headline_ratio(result.stdout) > 0
