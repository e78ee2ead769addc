"""allocator.py: the scripts start themselves again under a fast allocator when one is installed, and say which runs."""

import os
import subprocess
import sys

import pytest
from helpers import run_script

import allocator

INSTALLED = allocator.find_installed()
needs_one = pytest.mark.skipif(INSTALLED is None, reason="no fast allocator installed (requirements-cpu.txt has one)")


def without_choice() -> dict:
    """The environment of a user who set nothing: no choice, no allocator preloaded by a parent."""
    env = {key: value for key, value in os.environ.items() if key not in (allocator.CHOICE_ENV, allocator.TRIED_ENV)}
    env["LD_PRELOAD"] = ""
    return env


def allocator_line(output: str) -> str:
    """The one line that says which allocator runs."""
    lines = [line for line in output.splitlines() if "allocator: " in line]
    assert len(lines) == 1, output[-2000:]
    return lines[0]


def assert_runs_under_the_installed_one(output: str) -> None:
    # The path is read from the process's own memory map: the library is loaded, not only named.
    name, path = INSTALLED
    line = allocator_line(output)
    assert f"allocator: {name} (" in line and os.path.realpath(path) in line, line


@needs_one
def test_train_py_runs_under_the_installed_allocator_and_says_so(smoke_run):
    assert_runs_under_the_installed_one((smoke_run.parent / "stdout.txt").read_text())


@needs_one
@pytest.mark.parametrize(
    "script, args",
    [("evaluate.py", ["--smoke", "--limit", "2", "--output_dir", "OUT"]),
     ("ask.py", ["--smoke", "--index", "0", "--max_new_tokens", "4"]),
     ("sft.py", ["--smoke", "--max_steps", "1", "--output_dir", "OUT"])],
)  # fmt: skip
def test_each_script_runs_under_the_installed_allocator_and_says_so(script, args, tmp_path):
    args = [tmp_path / "out" if arg == "OUT" else arg for arg in args]
    done = run_script(script, *args, env=without_choice())
    assert done.returncode == 0, done.stderr[-2000:]
    assert_runs_under_the_installed_one(done.stdout + done.stderr)


@needs_one
def test_a_refusal_is_still_one_line_and_starting_again_keeps_the_exit_code(tmp_path):
    done = run_script("evaluate.py", "--checkpoint", tmp_path / "missing", env=without_choice())
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_glibc_when_the_user_asks_for_it(tmp_path):
    done = run_script("evaluate.py", "--smoke", "--limit", "1", "--output_dir", tmp_path, env={**without_choice(), allocator.CHOICE_ENV: "glibc"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "allocator: glibc malloc (GRPO_ALLOCATOR=glibc)" in allocator_line(done.stderr)


def test_a_library_that_does_not_load_is_one_note_then_glibc(tmp_path):
    not_a_library = tmp_path / "libnothing.so"
    not_a_library.write_text("not an ELF file")
    env = {**without_choice(), allocator.CHOICE_ENV: str(not_a_library)}
    done = run_script("evaluate.py", "--smoke", "--limit", "1", "--output_dir", tmp_path / "out", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"glibc malloc ({not_a_library} did not load)" in allocator_line(done.stderr)


def test_a_chosen_library_that_is_missing_is_one_note_then_glibc(monkeypatch):
    monkeypatch.setenv(allocator.CHOICE_ENV, "/no/such/libjemalloc.so.2")
    monkeypatch.delenv(allocator.TRIED_ENV, raising=False)
    monkeypatch.setattr(allocator, "loaded", lambda: None)
    allocator.use_fast_allocator()  # returns: nothing to start again with
    assert allocator.note() == "allocator: glibc malloc (GRPO_ALLOCATOR=/no/such/libjemalloc.so.2 is not a file)"


def test_without_a_fast_allocator_one_note_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(allocator, "loaded", lambda: None)
    monkeypatch.setattr(allocator, "find_installed", lambda: None)  # this machine's libraries cannot be uninstalled
    monkeypatch.setattr(allocator, "has_cuda_device", lambda: False)
    monkeypatch.delenv(allocator.CHOICE_ENV, raising=False)
    monkeypatch.delenv(allocator.TRIED_ENV, raising=False)
    allocator.use_fast_allocator()  # returns: nothing to start again with
    note = allocator.note()
    assert note.startswith("allocator: glibc malloc; a fast one") and "pip install cmeel-mimalloc" in note


def test_a_script_run_inside_another_program_is_never_started_again(monkeypatch):
    # As the tests run scripts with runpy: sys.argv names the script, the process is pytest.
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert not allocator.started_as_script()
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-u", "train.py", "--smoke"])
    assert allocator.started_as_script()
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "train", "--smoke"])
    assert not allocator.started_as_script()


MIMALLOC = next((d / "libmimalloc.so" for d in allocator.python_lib_dirs() if (d / "libmimalloc.so").is_file()), None)


@pytest.mark.skipif(MIMALLOC is None, reason="cmeel-mimalloc is not installed (requirements-cpu.txt has it)")
@pytest.mark.parametrize("user_setting", [None, "250"])
def test_mimalloc_keeps_freed_memory_unless_the_user_says_otherwise(tmp_path, user_setting):
    # Purging freed memory made sft.py 1.28x slower under mimalloc (allocator.MIMALLOC_SETTINGS).
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, allocator\nallocator.use_fast_allocator()\n"
        "print(allocator.loaded()[0], os.environ.get('MIMALLOC_PURGE_DELAY'))\n"
    )
    env = {**without_choice(), allocator.CHOICE_ENV: str(MIMALLOC), "PYTHONPATH": os.path.dirname(allocator.__file__)}
    env.pop("MIMALLOC_PURGE_DELAY", None)
    if user_setting:
        env["MIMALLOC_PURGE_DELAY"] = user_setting
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["mimalloc", user_setting or "-1"], done.stdout
