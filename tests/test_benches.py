"""The benchmark scripts run end to end at toy size and read what they measure."""

import re
import sys

import pytest
from conftest import REPO
from helpers import run_script

pytestmark = pytest.mark.slow


def test_heldout_cost_reads_a_run_with_held_out_evaluations(smoke_run, tmp_path):
    result = run_script("bench/heldout_cost.py", smoke_run)
    assert result.returncode == 0, result.stderr
    step = float(re.search(r"one training step:\s+([\d.]+) s \(median of 4\)", result.stdout).group(1))
    evaluation = float(re.search(r"one evaluation:\s+([\d.]+) s", result.stdout).group(1))
    ratio = float(re.search(r"evaluation / step:\s+([\d.]+)x", result.stdout).group(1))
    assert step > 0 and evaluation > 0
    # the two times are printed to 0.01 s, the ratio from the unrounded ones: on a fast machine they are ~0.1 s
    assert (evaluation - 0.005) / (step + 0.005) - 0.005 <= ratio <= (evaluation + 0.005) / (step - 0.005) + 0.005
    assert "eval_holdout 4" in result.stdout
    split = re.search(r"= generation ([\d.]+) s \(\d+ %\) \+ rewards ([\d.]+) ms \+ forward, backward and update "
                      r"(-?[\d.]+) s \(medians of 4\)", result.stdout)  # fmt: skip
    assert split and all(float(seconds) > 0 for seconds in split.groups()), result.stdout
    missing = run_script("bench/heldout_cost.py", tmp_path / "nowhere")
    assert missing.returncode == 1 and "heldout_cost.py: error:" in missing.stderr and "Traceback" not in missing.stderr


def test_random_model_of_a_real_shape_comes_with_the_real_tokenizer(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    import benchutil
    from transformers import AutoConfig, AutoTokenizer

    if not benchutil.QWEN_TOKENIZER.is_dir():
        pytest.skip("needs ../shared (the Qwen2.5 tokenizer)")
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    benchutil.build_random_model(tmp_path / "model", shape)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer.chat_template and AutoConfig.from_pretrained(tmp_path / "model").hidden_size == 32


def test_real_model_bench_leaves_the_evaluation_engine_to_evaluate_py_unless_given(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import real_model

    def evaluate_commands(*flags: str) -> list[list[str]]:
        plan = real_model.stage_plan(real_model.parse_args(["--dataset_name", "d", *flags]), tmp_path)
        return [command for commands in plan.values() for command in commands if command[1] == "evaluate.py"]

    assert len(evaluate_commands()) == 2 and all("--backend" not in command for command in evaluate_commands())
    for command in evaluate_commands("--backend", "hf"):
        assert command[command.index("--backend") + 1] == "hf"


def test_a_failed_stage_is_reported_under_the_name_of_the_script_the_user_ran(tmp_path, capsys):
    import demo

    stage = demo.Stage("evaluate.py (base)", log=tmp_path / "stage.log")
    with pytest.raises(SystemExit):
        demo.run_stage(stage, [sys.executable, "-c", "raise SystemExit(2)"], {}, False, prog="bench/real_model.py")
    assert "bench/real_model.py: error: evaluate.py (base) failed (exit 2)" in capsys.readouterr().err
