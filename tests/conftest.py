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
