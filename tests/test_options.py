"""Options shared by train.py and sft.py: short help, and errors that name what the user wrote."""

from dataclasses import fields

import pytest

import train
from backends import BackendError
from options import SHARED_OPTIONS, ConfigError, read_layers


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_is_short_and_lists_the_projects_options_first(capsys):
    text = help_text(capsys, "--help")
    lines = text.splitlines()
    assert len(lines) < 200
    options = [line.split()[0] for line in lines if line.startswith("  --")]
    assert options[0] == "--model_name_or_path"
    assert options.index("--smoke") < options.index("--learning_rate")
    for common in ("--learning_rate", "--num_generations", "--beta", "--max_steps", "--eval_steps", "--use_cpu"):
        assert common in options
    assert "--fsdp" not in options and "--push_to_hub" not in options
    assert "--help-all" in text


def test_help_all_lists_every_trainer_option(capsys):
    options = [line.split()[0] for line in help_text(capsys, "--help-all").splitlines() if line.startswith("  --")]
    assert {"--fsdp", "--push_to_hub", "--vllm_importance_sampling_correction", "--model_name_or_path"} <= set(options)


def test_help_shows_the_recipe_values_as_defaults(capsys):
    text = help_text(capsys, "-h")
    assert "(default: 3e-05)" in text  # the recipe's learning rate, not trl's 1e-6


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--learning_rat", "1"], "unknown option --learning_rat (did you mean --learning_rate?)"),
        (["--num-generation", "4"], "unknown option --num-generation (did you mean --num_generations?)"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_unknown_flags_suggest_the_closest_option(argv, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        train.parse_args([*argv, "--smoke"])


def test_batch_size_error_names_the_flag_the_user_gave():
    with pytest.raises(ConfigError) as error:
        train.parse_args(["--smoke", "--per-device-train-batch-size", "3"])
    message = str(error.value)
    assert "per_device_train_batch_size 3 (--per-device-train-batch-size on the command line)" in message
    assert "num_generations 2 (qwen2.5-0.5b-gsm8k-grpo.yaml)" in message
    assert "generation_batch_size (= per_device_train_batch_size x" in message  # the derived quantity explained


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("learning_rat: 0.5", ConfigError, "^{file}: unknown key 'learning_rat' \\(did you mean 'learning_rate'\\?\\)"),
        ("learning_rate: fast", ConfigError, "^{file}: learning_rate: 'fast' is not a valid float"),
        ("backend: tpu", BackendError, "unknown backend 'tpu'.* \\(backend from {file}\\)"),
        ("num_generations: 3", ConfigError, "num_generations 3 \\({file}\\)"),
    ],
)
def test_yaml_errors_name_the_file_and_the_key(tmp_path, content, error, message):
    config = tmp_path / "config.yaml"
    config.write_text(content + "\n")
    with pytest.raises(error, match=message.format(file=config)):
        train.parse_args(["--smoke", "--config", str(config)])


def test_short_help_leaves_out_the_negated_twins_of_true_flags(capsys):
    # HfArgumentParser adds --no_X beside every flag that defaults to true; --X false says the same.
    options = [line.split()[0] for line in help_text(capsys, "--help").splitlines() if line.startswith("  --")]
    assert "--fast_inference" in options and not any(option.startswith("--no_") for option in options)


def test_an_option_both_scripts_share_has_its_default_and_help_in_each():
    import sft

    for script_arguments in (train.ScriptArguments, sft.SFTScriptArguments):
        declared = {f.name: f for f in fields(script_arguments)}
        for name, (default, help_text) in SHARED_OPTIONS.items():
            assert declared[name].metadata == {"help": help_text}
            assert getattr(script_arguments(), name) == default
    first, second = train.ScriptArguments(), train.ScriptArguments()
    first.lora_target_modules.append("lm_head")  # a list default is each instance's own
    assert second.lora_target_modules == SHARED_OPTIONS["lora_target_modules"][0]


def test_a_boolean_option_before_parsing_is_the_command_line_s_else_the_defaults(tmp_path):
    def use_cpu(*argv: str) -> bool:
        return read_layers(list(argv), train.RECIPE, presets={"smoke": train.SMOKE_OVERRIDES}).flag("use_cpu")

    config = tmp_path / "cpu.yaml"
    config.write_text("use_cpu: true\n")
    assert not use_cpu() and use_cpu("--smoke") and use_cpu("--config", str(config))
    assert not use_cpu("--smoke", "--use_cpu", "false") and not use_cpu("--config", str(config), "--use_cpu=false")
    assert use_cpu("--use-cpu")
