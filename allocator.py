"""A fast memory allocator under the command-line scripts on the CPU, without the user typing LD_PRELOAD.

PyTorch on the CPU allocates and frees tensors of tens of megabytes on every step (a sequence's full-vocabulary
logits alone are ~60 MB). glibc's malloc hands each one back to the kernel and maps it again on the next step,
so a training step spends as much time in the kernel, zeroing fresh pages, as in arithmetic. tcmalloc, jemalloc
and mimalloc keep freed memory for the next allocation (docs/BENCHMARKS.md, "The memory allocator").

`use_fast_allocator()` is the first call of each script's `__main__`: when such an allocator is installed and
not yet loaded, the script starts itself again at once (os.execv, before torch is imported) with the library in
LD_PRELOAD; the stages and workers it starts inherit it. `note()` is the console line that says which allocator
runs; where none is installed it says how to get one, and the script goes on with glibc's malloc.

    GRPO_ALLOCATOR=glibc python train.py ...      # keep glibc's malloc
    GRPO_ALLOCATOR=/path/to/libjemalloc.so.2 ...  # a library of your choice

The faster choice on a CUDA machine is not measured here, so there it only runs when GRPO_ALLOCATOR names one.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from pathlib import Path

CHOICE_ENV = "GRPO_ALLOCATOR"
# Set before starting again: a library that did not load is not tried a second time.
TRIED_ENV = "GRPO_ALLOCATOR_TRIED"
GLIBC_NAMES = ("glibc", "system", "none", "off")
SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# In the order tried; each name is also how the library shows in the process's memory map.
# mimalloc comes from PyPI (cmeel-mimalloc, in requirements-cpu.txt); the others from the system's packages
# (Debian/Ubuntu: libtcmalloc-minimal4, libjemalloc2).
KNOWN = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
    "mimalloc": ("libmimalloc.so",),
}
# mimalloc hands freed memory back to the system 10-100 ms after it is freed, so each training step faults its
# large tensors in again: sft.py on 48 SmolLM2 answers took 170 s (58 s in the kernel) with it as it comes, 133 s
# (14 s) without purging, 125 s (6.5 s) under tcmalloc; the peak rose 3.27 -> 3.47 GB. A user's own setting wins.
MIMALLOC_SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}
INSTALL_HINT = "pip install cmeel-mimalloc (in requirements-cpu.txt), or the system's libtcmalloc-minimal4"


def python_lib_dirs() -> list[Path]:
    """Where pip puts a packaged library (cmeel-mimalloc: site-packages/cmeel.prefix/lib)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return [Path(root) / "cmeel.prefix" / "lib" for root in sorted(roots)]


def find_installed() -> tuple[str, str] | None:
    """(name, path) of the first fast allocator installed here, in KNOWN's order; None without one."""
    folders = [*python_lib_dirs(), *map(Path, SYSTEM_LIB_DIRS)]
    for name, files in KNOWN.items():
        for folder in folders:
            for file in files:
                if (folder / file).is_file():
                    return name, str(folder / file)
    return None


def loaded() -> tuple[str, str] | None:
    """(name, path) of the fast allocator this process runs with, read from its memory map; None: glibc's."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1]
        for name, files in KNOWN.items():
            if any(Path(path).name.startswith(file.split(".so")[0] + ".so") for file in files):
                return name, path
    return None


def started_as_script() -> bool:
    """True when this process was started as `python SCRIPT ...` for the script now running (not -m, -c, or a
    script run in-process by another program, as the tests do), so starting it again repeats the user's command."""
    args = sys.orig_argv[1:]
    takes_value = {"-W", "-X", "-Q"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-m", "-c", "-"):
            return False
        i += 2 if args[i] in takes_value else 1
    return i < len(args) and os.path.realpath(args[i]) == os.path.realpath(sys.argv[0])


def requested() -> str | None:
    """What GRPO_ALLOCATOR asks for: None (choose), 'glibc', or a library path."""
    value = os.environ.get(CHOICE_ENV, "").strip()
    if not value or value == "auto":
        return None
    return "glibc" if value.lower() in GLIBC_NAMES else value


def has_cuda_device() -> bool:
    """An NVIDIA device node: a CUDA machine, where no allocator is preloaded unless asked for."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def use_fast_allocator() -> None:
    """Start this script again with a fast allocator preloaded when one is installed and none runs yet (see the
    module docstring); otherwise return. `note()` then says which allocator runs."""
    choice = requested()
    if loaded() or choice == "glibc" or sys.platform != "linux" or os.environ.get(TRIED_ENV):
        return
    if choice is None and has_cuda_device():
        return
    found = choice if choice else (find_installed() or (None, None))[1]
    if not found or not Path(found).is_file() or not started_as_script():
        return
    os.environ.update({"LD_PRELOAD": " ".join(filter(None, [found, os.environ.get("LD_PRELOAD", "")])), TRIED_ENV: found})
    if Path(found).name.startswith("libmimalloc"):
        for name, value in MIMALLOC_SETTINGS.items():
            os.environ.setdefault(name, value)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def note() -> str:
    """One console line: which allocator this process runs with, and how to get a fast one where it has none."""
    running = loaded()
    if running:
        return f"allocator: {running[0]} ({running[1]})"
    choice = requested()
    if choice == "glibc":
        return f"allocator: glibc malloc ({CHOICE_ENV}={os.environ.get(CHOICE_ENV)})"
    if sys.platform != "linux":
        return "allocator: the system's malloc"
    if os.environ.get(TRIED_ENV):
        return f"allocator: glibc malloc ({os.environ[TRIED_ENV]} did not load)"
    if choice is not None:
        return f"allocator: glibc malloc ({CHOICE_ENV}={choice} is not a file)"
    installed = find_installed()
    if installed:
        return f"allocator: glibc malloc ({installed[1]} is installed; `python SCRIPT` runs under it)"
    if has_cuda_device():
        return f"allocator: glibc malloc (a CUDA machine: {CHOICE_ENV}=PATH preloads a library)"
    return f"allocator: glibc malloc; a fast one makes CPU training up to ~1.8x faster: {INSTALL_HINT}"
