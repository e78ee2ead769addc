"""What the training scripts (train.py, sft.py) write and say about a run, on the main process only.

`run_config.json` holds the resolved configuration; after a Ctrl-C, `stop_interrupted` says where the run
stopped and which command continues it, and exits 130 as a shell does for an interrupted command.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from options import spellings


def is_main_process() -> bool:
    """False on every process but the first when several are launched (accelerate launch, torchrun)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def main_process_print(*args: Any) -> None:
    """print() on the main process only (accelerate launch starts several)."""
    if is_main_process():
        print(*args, flush=True)


def save_run_config(script_args: Any, training_args: Any, backend: str) -> None:
    """Write the resolved configuration next to the outputs."""
    config = {
        "backend": backend,
        "processes": training_args.world_size,
        "script": asdict(script_args),
        "training": training_args.to_dict(),
    }
    Path(training_args.output_dir, "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def stop_interrupted(argv: list[str], training_args: Any, step: int, saved: bool, prog: str = "train.py") -> None:
    """After Ctrl-C: say where the run stopped and how to continue it; exit 130 (128 + SIGINT), as a shell does."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = training_args.output_dir
    checkpoint = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    # The same command with --resume, which continues the newest checkpoint in output_dir.
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in spellings("resume_from_checkpoint"):
            skip = "=" not in arg
        elif arg not in spellings("resume"):
            kept.append(arg)
    command = shlex.join(["python", prog, *kept, "--resume"])
    where = (
        f"checkpoint saved in {checkpoint}"
        if saved and checkpoint
        else (f"not saved; the last checkpoint is {checkpoint}" if checkpoint else "no checkpoint saved")
    )
    main_process_print(f"\ninterrupted at step {step}: {where}. To continue: {command}")
    raise SystemExit(130)
