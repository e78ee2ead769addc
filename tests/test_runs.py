"""runs.py: the steps of a run that train.py and sft.py share."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

import runs
import sft
import train
from backends import BackendError
from options import ConfigError


@pytest.mark.parametrize("error", [ConfigError("bad flag"), BackendError("bad flag"), ValueError("bad flag")])
def test_a_bad_configuration_is_one_error_line_and_exit_code_2(error, capsys):
    with pytest.raises(SystemExit) as exit_info, runs.exit_on_bad_config("sft.py"):
        raise error
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "sft.py: error: bad flag\n"


def test_other_errors_are_not_taken_for_a_bad_configuration():
    with pytest.raises(OSError, match="disk full"), runs.exit_on_bad_config("train.py"):
        raise OSError("disk full")


@pytest.mark.parametrize("script_arguments", [train.ScriptArguments, sft.SFTScriptArguments])
def test_only_smoke_with_the_default_model_builds_the_tiny_model(script_arguments):
    assert runs.smoke_builds_model(script_arguments(smoke=True))
    assert not runs.smoke_builds_model(script_arguments(smoke=True, model_name_or_path="my/model"))
    assert not runs.smoke_builds_model(script_arguments())


def test_resuming_keeps_the_metrics_up_to_the_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"loss": 1.0, "step": s}) + "\n" for s in (1, 2, 3)))
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    assert runs.resume_metrics(str(tmp_path), str(checkpoint)) == 2
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert capsys.readouterr().out == f"resuming from {checkpoint}\n"


@pytest.mark.parametrize("script", ["train.py", "sft.py"])
def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path, script):
    # Ctrl-C while the data loads, stood in for by the loader raising KeyboardInterrupt: nothing to save yet.
    stand_in = (
        "import runpy, sys, data\n"
        "def interrupted(*args, **kwargs): raise KeyboardInterrupt\n"
        "data.get_gsm8k_questions = data.get_sft_dataset = data.load_raw_split = interrupted\n"
        f"sys.argv = [{script!r}, '--smoke', '--output_dir', {str(tmp_path / 'run')!r}]\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", stand_in], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"{script}: interrupted" and "Traceback" not in result.stderr


def test_a_finished_script_closes_its_process_group(tmp_path):
    # torchrun's ranks train in a gloo group; left open to the end, a rank that finished training could abort
    # at exit (SIGABRT, "terminate called without an active exception") and fail the whole launch.
    import torch.distributed as dist

    seen = {}

    def main():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        seen["open"] = dist.is_initialized()

    runs.run_script("train.py", main)
    assert seen["open"] and not dist.is_initialized()
