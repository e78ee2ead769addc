"""Options of the training scripts (train.py, sft.py): recipe YAML < preset < --config FILE.yaml < flags.

Each script declares its options as dataclasses (its own plus trl's GRPOConfig / SFTConfig) and parses them
with trl's `TrlParser`. This module adds what a user of a recipe needs on top:
- layers: the recipe's values become the defaults, a preset (`--smoke`) and a `--config` file override
  them, flags override everything; `where(name)` says which layer a value came from;
- a short `--help` (the script's own options and a curated list of trainer fields) and `--help-all`;
- errors that name what the user wrote: an unknown flag or YAML key with the closest real option, a bad YAML
  value with its file and key, and trl's own config checks restated with the flags behind each quantity.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from data import SAMPLE_DATA_DIR

# What `--smoke` sets in both train.py and sft.py: the same code path at toy size, offline on CPU, on the
# shipped problems (the tiny model is built in output_dir). Each script adds its own output_dir and fields.
SMOKE_TRAINING = dict(
    dataset_name=str(SAMPLE_DATA_DIR),
    eval_holdout=4,  # of the 16 sample problems: sft.py keeps out the 4 train.py holds out
    max_steps=4,
    per_device_train_batch_size=4,  # train.py: 2 prompts x 2 completions per step
    gradient_accumulation_steps=1,
    lora_r=8,
    lora_alpha=16,
    learning_rate=1e-3,
    warmup_steps=0,
    save_steps=2,
    use_cpu=True,
    gradient_checkpointing=False,
)


HELP_FLAGS = ("-h", "--help")
HELP_ALL_FLAG = "--help-all"
CONFIG_EPILOG = "--config FILE.yaml sets any of these options from a YAML file; flags given here override it."
# Quantities trl derives from others: its error messages name them, users set the fields on the right.
DERIVED = {
    "generation_batch_size": (
        "per_device_train_batch_size x processes x steps_per_generation",
        ("per_device_train_batch_size", "steps_per_generation", "gradient_accumulation_steps"),
    ),
}

# Options train.py and sft.py both declare, with the same default and help: each script's dataclass places them
# where its --help lists them, as `lora_r: int = shared_option("lora_r")`.
SHARED_OPTIONS: dict[str, tuple[Any, str]] = {
    "dataset_config": ("main", "Hub dataset configuration."),
    "dataset_train_split": ("train", "Split to train on."),
    "lora_r": (32, "LoRA rank."),
    "lora_alpha": (64, "LoRA alpha (scaling = alpha / r)."),
    "lora_target_modules": (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get LoRA adapters.",
    ),
    "smoke": (False, "Tiny random model on the shipped samples, CPU, offline."),
    "resume": (False, "Continue from the newest checkpoint in output_dir."),
}


def shared_option(name: str) -> Any:
    """The dataclass field of SHARED_OPTIONS[name]; a list default is a fresh copy for each instance."""
    default, help_text = SHARED_OPTIONS[name]
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


class ConfigError(ValueError):
    """A configuration problem found before any model loads (one-line message, exit code 2)."""


def spellings(name: str) -> set[str]:
    """The two ways a flag can be written: `--learning_rate` and `--learning-rate`."""
    return {f"--{name}", f"--{name.replace('_', '-')}"}


def negations(name: str) -> set[str]:
    """HfArgumentParser's `--no_name` / `--no-name` for a boolean option whose default is true."""
    return {f"--no_{name}", f"--no-{name.replace('_', '-')}"}


def given(cli: list[str], name: str) -> bool:
    """True when the flag `name` is on the command line, in either spelling (or as `--no_name`)."""
    return any(arg.split("=", 1)[0] in spellings(name) | negations(name) for arg in cli)


def flag_on(cli: list[str], name: str) -> bool:
    """Value of a boolean flag as HfArgumentParser reads it: `--name`, `--name true`, `--name=false`, `--no_name`."""
    value = None
    for i, arg in enumerate(cli):
        key, _, inline = arg.partition("=")
        if key in spellings(name):
            following = cli[i + 1].lower() if i + 1 < len(cli) else ""
            value = inline.lower() if inline else following if following in ("true", "false", "yes", "no", "1", "0") else "true"
        elif key in negations(name):
            value = "false"
    return value in ("true", "yes", "1")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file of option: value pairs; anything else is a ConfigError naming the file."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return config


@dataclass
class Layers:
    """The merged defaults (recipe < preset < --config file), the remaining flags, and where each value came from."""

    config: dict[str, Any]
    cli: list[str]
    origin: dict[str, str] = field(default_factory=dict)  # option -> "recipe.yaml", "--smoke", "my.yaml", "a note"
    config_file: str | None = None  # the user's --config file, as written

    def set(self, name: str, value: Any, why: str) -> None:
        """Change a default (e.g. switch off what the machine cannot run), remembering why."""
        self.config[name] = value
        self.origin[name] = why

    def where(self, name: str) -> str:
        """Which layer the value of `name` comes from, in the user's words."""
        for arg in self.cli:
            flag = arg.split("=", 1)[0]
            if flag in spellings(name) | negations(name):
                return f"{flag} on the command line"
        if name in self.origin:
            return self.origin[name]
        return "default"

    def flag(self, name: str) -> bool:
        """A boolean option's value before parsing: as the command line gives it, else as the merged defaults do."""
        return flag_on(self.cli, name) if given(self.cli, name) else bool(self.config.get(name))

    def from_user(self, name: str) -> bool:
        """True when the user chose `name`'s value: a flag or a key of their --config file (not the recipe, a preset)."""
        return given(self.cli, name) or (self.config_file is not None and self.origin.get(name) == self.config_file)


def read_layers(argv: list[str], recipe: Path, presets: dict[str, dict[str, Any]] | None = None) -> Layers:
    """Merge the recipe, any preset switched on (`--smoke`), and the --config file into one set of defaults."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, cli = pre.parse_known_args(argv)
    layers = Layers({}, cli, config_file=known.config)

    def merge(values: dict[str, Any], source: str) -> None:
        for key, value in values.items():
            layers.set(key, value, source)

    recipe_values = read_yaml(recipe)
    recipe_values.pop("env", None)
    merge(recipe_values, f"{recipe.name}")
    user = read_yaml(known.config) if known.config else {}
    env = user.pop("env", {})  # trl's convention: env: {VAR: value} in the YAML
    if not isinstance(env, dict):
        raise ConfigError(f"{known.config}: env must be a mapping of VARIABLE: value")
    for key, value in env.items():
        os.environ[key] = str(value)
    for name, values in (presets or {}).items():
        if flag_on(cli, name) or (user.get(name) and not given(cli, name)):
            merge(values, f"--{name}")
    merge(user, f"{known.config}")
    return layers


def _option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [action.dest for action in parser._actions if action.option_strings and action.dest != "help"]


def _suggestion(name: str, names: list[str], as_flag: bool = True) -> str:
    close = difflib.get_close_matches(name.lstrip("-").replace("-", "_"), names, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean --{close[0]}?)" if as_flag else f" (did you mean '{close[0]}'?)"


def _check_yaml_values(parser: argparse.ArgumentParser, layers: Layers) -> None:
    """Unknown keys and values of the wrong type, named by the file and key they were written as."""
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    names = list(actions)
    for key, value in layers.config.items():
        source = layers.origin.get(key, "config")
        action = actions.get(key)
        if action is None:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggestion(key, names, as_flag=False)}")
        if value is None or action.type is None:
            continue
        values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
        for item in values:
            try:
                converted = action.type(item) if isinstance(item, str) or action.type in (int, float) else item
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                type_name = getattr(action.type, "__name__", "value")
                raise ConfigError(f"{source}: {key}: {item!r} is not a valid {type_name}") from None
            if action.choices and converted not in action.choices and str(converted) not in map(str, action.choices):
                choices = ", ".join(map(str, action.choices))
                raise ConfigError(f"{source}: {key}: {item!r} is not one of {choices}")


def _restate(message: str, parsed: dict[str, Any], layers: Layers, names: list[str]) -> str:
    """trl's config error with each quantity it names traced back to the options (and layers) that set it."""
    text = message.splitlines()[0]
    mentioned = [name for name in names if re.search(rf"\b{re.escape(name)}\b", text)]
    settings = []
    for name in mentioned:
        if name in DERIVED:
            formula, inputs = DERIVED[name]
            text = text.replace(name, f"{name} (= {formula})", 1)
            settings += [n for n in inputs if n in parsed and (given(layers.cli, n) or n in layers.origin)]
        else:
            settings.append(name)
    named = [name for name in dict.fromkeys(settings) if name in parsed]
    named.sort(key=lambda name: not given(layers.cli, name))  # what the user typed first
    described = [f"{name} {parsed[name]!r} ({layers.where(name)})" for name in named]
    return text + (f" -- set by: {'; '.join(described)}" if described else "")


def parse(
    dataclass_types: tuple[type, ...],
    layers: Layers,
    *,
    prog: str,
    description: str,
    curated: tuple[str, ...],
    epilog: str = CONFIG_EPILOG,
) -> tuple[Any, ...]:
    """Parse the flags over the layered defaults into the dataclasses; prints help and exits on -h / --help-all.

    `--help` lists the first dataclass's options (the script's own) and the `curated` fields of the others;
    `--help-all` lists everything. Every problem is a ConfigError that names the flag, file or key at fault.
    """
    from trl import TrlParser

    show_all = HELP_ALL_FLAG in layers.cli
    usage = f"{prog} [--config FILE.yaml] [options]   (--help: the common options, --help-all: all of them)"
    parser = TrlParser(dataclass_types, prog=prog, usage=usage, description=description, epilog=epilog,
                       allow_abbrev=False, add_help=False)  # fmt: skip
    own = {f.name for f in fields(dataclass_types[0])}
    _check_yaml_values(parser, layers)
    parser.set_defaults_with_config(**layers.config)
    if show_all or any(arg in HELP_FLAGS for arg in layers.cli):
        _print_help(parser, keep=None if show_all else own | set(curated))
        raise SystemExit(0)

    names = _option_names(parser)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=layers.cli, return_remaining_strings=True)
    except ValueError as error:  # the dataclasses' own checks (trl: batch sizes, generation counts, ...)
        values = {n: getattr(d, n) for d in _bare_instances(parser, layers) for n in names if hasattr(d, n)}
        raise ConfigError(_restate(str(error), values, layers, names)) from error
    unknown = [arg for arg in remaining if arg.startswith("-")]
    if unknown or remaining:
        first = (unknown or remaining)[0]
        hint = _suggestion(first.split("=", 1)[0], names) if first.startswith("-") else ""
        raise ConfigError(f"unknown option {first}{hint}" if unknown else f"unexpected argument '{first}'")
    return tuple(parsed)


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _print_help(parser: argparse.ArgumentParser, keep: set[str] | None) -> None:
    """Help with one spelling and a short placeholder per option; only the options in `keep` (None: all)."""
    for action in parser._actions:
        if not action.option_strings:
            continue
        negated = action.option_strings[0].startswith("--no_")  # HfArgumentParser's twin of a true-by-default flag
        if keep is not None and (action.dest not in keep or negated):
            action.help = argparse.SUPPRESS
        action.option_strings = action.option_strings[:1]  # the dashed spelling works too: said in the epilog
        if action.choices and len(action.choices) > 6:
            action.metavar = "NAME"
        elif not action.choices:
            action.metavar = "BOOL" if action.nargs == "?" else _METAVARS.get(action.type, "VALUE")
    parser.formatter_class = lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=40, width=110)
    parser.epilog = (parser.epilog + " " if parser.epilog else "") + "Every option can also be written with dashes."
    parser.print_help()


def _bare_instances(parser: argparse.ArgumentParser, layers: Layers) -> list[Any]:
    """The parsed values as a namespace, without the dataclasses' checks (to describe an error they raised)."""
    namespace, _ = parser.parse_known_args(args=layers.cli)
    return [namespace]


def parse_flags(
    arguments_class: type, argv: list[str] | None, prog: str, description: str, positional: str | None = None
) -> Any:
    """Command-line flags into one dataclass (transformers' HfArgumentParser: `--max_new_tokens` and
    `--max-new-tokens` both work); an unknown flag is an error, exit code 2, as argparse does. `positional`: the
    field that one bare argument fills (`python export_gguf.py CHECKPOINT`), as its flag also does."""
    from transformers import HfArgumentParser

    # allow_abbrev=False: argparse would otherwise take a misspelt `--max_new_token` for `--max_new_tokens`.
    parser = HfArgumentParser(arguments_class, prog=prog, description=description, allow_abbrev=False)
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    bare = [arg for arg in unknown if not arg.startswith("-")]
    if positional and len(bare) == 1 and getattr(args, positional) is None:
        unknown.remove(bare[0])
        setattr(args, positional, bare[0])
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def exit_with(prog: str, message: str) -> None:
    """Print one error line and exit with code 2, as argparse does."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
