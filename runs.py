"""The run both training scripts (train.py, sft.py) make, and what it writes and says, on the main process only.

Both go the same way: `exit_on_bad_config` around the checks (one error line, exit 2, before anything loads),
`load_tokenizer` (building --smoke's tiny model first), `resume_metrics` when continuing a checkpoint, then
`train_until_stopped`. `run_config.json` holds the resolved configuration; after a Ctrl-C, `stop_interrupted`
(during training) and `stop_after_training` (during the final evaluation, save or merge) say what is on disk and
which command continues the run, and exit 130 as a shell does for an interrupted command.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from allocator import use_fast_allocator
from backends import BackendError
from options import ConfigError, exit_with, spellings
from run_metrics import trim_metrics


def is_main_process() -> bool:
    """False on every process but the first when several are launched (accelerate launch, torchrun)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def main_process_print(*args: Any) -> None:
    """print() on the main process only (accelerate launch starts several)."""
    if is_main_process():
        print(*args, flush=True)


@contextmanager
def exit_on_bad_config(prog: str) -> Iterator[None]:
    """Turn a problem the checks raise (ConfigError, BackendError, ValueError) into one error line and exit 2."""
    try:
        yield
    except (ConfigError, BackendError, ValueError) as error:
        exit_with(prog, str(error))


def smoke_builds_model(script_args: Any) -> bool:
    """--smoke without a model of the user's: the run builds its tiny random model in output_dir."""
    return script_args.smoke and script_args.model_name_or_path == type(script_args).model_name_or_path


def load_tokenizer(prog: str, script_args: Any, training_args: Any) -> Any:
    """The tokenizer of the model to train, after building --smoke's tiny model (then the model trained).

    A tokenizer that cannot be loaded is one error line and exit 2.
    """
    from transformers import AutoTokenizer

    if smoke_builds_model(script_args):
        from tiny_model import build_tiny_model

        with training_args.main_process_first(desc="the tiny model"):  # one process builds it, the others load it
            model_dir = build_tiny_model(Path(training_args.output_dir).resolve() / "base-model")
        script_args.model_name_or_path = str(model_dir)
    try:
        return AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    except OSError as error:
        exit_with(prog, f"cannot load the tokenizer of {script_args.model_name_or_path}: {str(error).splitlines()[0]}")


def save_run_config(script_args: Any, training_args: Any, backend: str) -> None:
    """Write the resolved configuration next to the outputs."""
    config = {
        "backend": backend,
        "processes": training_args.world_size,
        "script": asdict(script_args),
        "training": training_args.to_dict(),
    }
    Path(training_args.output_dir, "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def make_trainer(trainer_class: Any, script_args: Any, training_args: Any, backend: str, model: Any, tokenizer: Any,
                 peft_config: Any, callbacks: list[Any], **inputs: Any) -> Any:  # fmt: skip
    """The run's trl trainer (GRPOTrainer, SFTTrainer) on `model`, `inputs` its data (and rewards): the loss first
    set to project only the scored positions, as CUDA's does (lm_head.py), and run_config.json written."""
    from lm_head import score_labelled_positions_only

    score_labelled_positions_only()
    save_run_config(script_args, training_args, backend)
    return trainer_class(
        model=model, args=training_args, processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks, **inputs
    )


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


def resume_metrics(output_dir: str, resume_from: str) -> int:
    """Before continuing `resume_from`: drop metrics.jsonl's entries past its step (they are logged again), say
    which checkpoint the run continues, and return that step."""
    step = int(json.loads((Path(resume_from) / "trainer_state.json").read_text())["global_step"])
    if is_main_process():  # torchrun starts every rank on the same folder: a second writer would race the first
        trim_metrics(output_dir, step)
    main_process_print(f"resuming from {resume_from}")
    return step


def train_until_stopped(trainer: Any, resume_from: str | None, interrupt: Any, argv: list[str], prog: str) -> None:
    """Train (continuing `resume_from`); after a Ctrl-C say where the run stopped and exit 130.

    `interrupt` is the run's GracefulInterruptCallback: its first Ctrl-C ends training with a checkpoint saved;
    a second one, or one before its handler is in place, stops at once with nothing saved.
    """
    try:
        train_or_restore(trainer, resume_from)
    except KeyboardInterrupt:
        stop_interrupted(argv, trainer.args, trainer.state.global_step, saved=False, prog=prog)
    if interrupt.interrupted:
        stop_interrupted(argv, trainer.args, trainer.state.global_step, saved=True, prog=prog)


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


def run_script(prog: str, main: Any) -> None:
    """A training CLI's entry point, under a fast allocator where one is installed (allocator.py); Ctrl-C before
    training starts has nothing to save, so one line and exit 130."""
    use_fast_allocator()
    try:
        main()
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        end_process_group()


def end_process_group() -> None:
    """Close the process group torchrun's ranks train in. Left to exit, gloo's threads can outlive the objects
    that own them, and a rank that finished training aborts ("terminate called without an active exception")."""
    if "torch" not in sys.modules:  # a run refused before torch loaded has no group
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
