"""What the training scripts (train.py, sft.py) write and say about a run, on the main process only.

`run_config.json` holds the resolved configuration; after a Ctrl-C, `stop_interrupted` (during training) and
`stop_after_training` (during the final evaluation, save or merge) say what is on disk and which command
continues the run, and exit 130 as a shell does for an interrupted command.
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


def last_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N folder in output_dir, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def resume_command(argv: list[str], prog: str) -> str:
    """The same command with --resume, which continues the newest checkpoint in output_dir."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in spellings("resume_from_checkpoint"):
            skip = "=" not in arg
        elif arg not in spellings("resume"):
            kept.append(arg)
    return shlex.join(["python", prog, *kept, "--resume"])


def train_or_restore(trainer: Any, resume_from: str | None) -> None:
    """trainer.train(), resuming `resume_from`; a checkpoint of the run's last step is only loaded, not trained on.

    A run stopped after its last step (during the final evaluation or save) resumes to finish: transformers,
    resumed at max_steps, trains one step more (its loop looks for the end after each step), so that case gets
    the checkpoint's weights and state back instead.
    """
    if resume_from:
        from transformers import TrainerState

        state = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json"))
        if 0 < trainer.args.max_steps <= state.global_step:
            trainer._load_from_checkpoint(resume_from)  # what train() itself does first when resuming
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=resume_from)


def stop_interrupted(argv: list[str], training_args: Any, step: int, saved: bool, prog: str = "train.py") -> None:
    """After Ctrl-C: say where the run stopped and how to continue it; exit 130 (128 + SIGINT), as a shell does."""
    checkpoint = last_checkpoint(training_args.output_dir)
    where = (
        f"checkpoint saved in {checkpoint}"
        if saved and checkpoint
        else (f"not saved; the last checkpoint is {checkpoint}" if checkpoint else "no checkpoint saved")
    )
    main_process_print(f"\ninterrupted at step {step}: {where}. To continue: {resume_command(argv, prog)}")
    raise SystemExit(130)


def stop_after_training(argv: list[str], training_args: Any, step: int, doing: str, written: list[str],
                        prog: str = "train.py") -> None:  # fmt: skip
    """After a Ctrl-C once training is over: what is on disk, and the command that finishes the run; exit 130.

    `doing`: what was interrupted (the final evaluation, the save, the merge); `written`: what was complete.
    Resuming from a checkpoint of the last step trains nothing and runs that evaluation, save and merge again.
    """
    checkpoint = last_checkpoint(training_args.output_dir)
    state = f"the last checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved"
    done = "; ".join(written) if written else "the final model was not written"
    if checkpoint and Path(checkpoint).name != f"checkpoint-{step}":
        finish = f"To continue from there: {resume_command(argv, prog)}"
    elif checkpoint:
        finish = f"To finish: {resume_command(argv, prog)}"
    else:
        finish = "The trained weights were not kept (no checkpoint): run again into a new --output_dir"
    main_process_print(f"\ninterrupted while {doing}, after training ended at step {step}: {done}; {state}. {finish}")
    raise SystemExit(130)
