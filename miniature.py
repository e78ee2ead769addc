"""The CPU miniature of the recipe: small GSM8K-format word problems, and a tiny model and tokenizer for them.

    python miniature.py data OUT_DIR [--seed 0] [--train 4000] [--test 200]   # OUT_DIR/train.jsonl, test.jsonl
    python miniature.py cold-start OUT_DIR --data DATA_DIR [--seed 0]          # OUT_DIR/train.jsonl: worked solutions
    python miniature.py model OUT_DIR --data DATA_DIR [--seed 0]               # a random tiny Qwen2 + tokenizer

The problems are one or two arithmetic steps in words ("Mia has 7 pens and buys 5 more. ..."), each a GSM8K
row: `question`, and `answer` = sentences with calculator annotations (`7+5=<<7+5=12>>12`) ending in
`#### 12`. They are generated from a seed (same seed, same rows), and no question is in both splits, so
data.py, sft.py, train.py and evaluate.py read them as they read GSM8K. demo.py runs the whole recipe on them.

New wording alone would not make the test split unseen: the numbers allow only ~200 distinct calculations, and
4000 training problems use every one of them. So a seeded share of the two-step chains (first and second step
together, in either operand order) is kept for the test split: no training problem, and so no cold-start
solution, takes those two steps in a row. Each step of a kept chain is still a calculation the training
problems contain elsewhere: the test asks for a new combination of known facts, not for arithmetic never
shown. One-step problems cannot be kept apart that way (the ~55 facts are all needed to learn arithmetic), so
the test split's one-step problems repeat calculations of training problems in new words.

The cold-start set is what R1 started from at toy size: worked solutions by a writer who is not always right.
This one has one habit: in most two-step problems it stops after the first step and reports that result.
Supervised fine-tuning copies the habit (greedy decoding then gets every two-step problem wrong); GRPO,
paid for the right final answer, has to unlearn it. The training and test splits keep the true solutions.
The generator is pure Python; torch and transformers are imported only to build the model.
"""

from __future__ import annotations

import argparse
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from run_metrics import read_jsonl, write_jsonl

NAMES = (
    "Ava", "Ben", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eva", "Tom",
    "Lily", "Noah", "Emma", "Jack", "Ella", "Finn", "Ruby", "Owen", "Nora", "Luke",
)  # fmt: skip
OBJECTS = (
    "apples", "pens", "books", "cards", "shells", "coins", "stamps", "marbles", "cookies", "stickers",
    "rocks", "toys", "plums", "beads", "kites", "eggs", "cups", "socks", "balls", "hats",
)  # fmt: skip
CONTAINERS = ("bags", "boxes", "jars", "packs", "baskets")
# Small numbers keep the arithmetic a table of ~100 facts: a tiny model learns it in minutes, and GRPO meets each
# fact often enough to correct it (with 1..9 it is ~500 facts, and neither stage gets far on a CPU budget).
MAX_TERM = 5  # addends, subtrahends and the number already had: 1..MAX_TERM
MAX_FACTOR = 3  # factors: 2..MAX_FACTOR
# Most problems take two steps, as most of GSM8K's take several: after the cold start, which stops two-step
# problems early, strict accuracy stays well under one half however well one-step problems go.
TWO_STEP_SHARE = 0.6
# The cold-start writer stops early in this share of two-step solutions: more than half, so that a model that
# imitates it stops early when decoding greedily, yet samples the second step often enough for GRPO to find it.
SKIPPED_STEP_SHARE = 0.6
# A calculator annotation of a solution: "<<7+5=12>>" -> "7+5".
ANNOTATION = re.compile(r"<<([^=>]+)=")
# The share of two-step chains kept for the test split (22 of the 90 counting 2+3 and 3+2 as one): enough
# distinct chains that the test's two-step accuracy is not a few chains' luck, few enough that training still
# meets every step of a kept chain in other problems.
HELDOUT_CHAIN_SHARE = 0.25


def _one_step(rng: random.Random, name: str, other: str, things: str) -> tuple[str, list[tuple[str, str]], int]:
    """A one-step problem: (question, [(sentence with {calc} placeholder, expression)], result)."""
    kind = rng.choice(("add", "sub", "mul"))
    if kind == "add":
        a, b = rng.randint(1, MAX_TERM), rng.randint(1, MAX_TERM)
        question = f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?"
        return question, [(f"{name} has {{calc}} {things} now.", f"{a}+{b}")], a + b
    if kind == "sub":
        b = rng.randint(1, MAX_TERM)
        a = b + rng.randint(1, MAX_TERM)
        question = f"{name} had {a} {things} and gave {b} to {other}. How many {things} does {name} have left?"
        return question, [(f"{name} has {{calc}} {things} left.", f"{a}-{b}")], a - b
    a, b = rng.randint(2, MAX_FACTOR), rng.randint(2, MAX_FACTOR)
    box = rng.choice(CONTAINERS)
    question = f"{name} buys {a} {box} with {b} {things} in each. How many {things} does {name} buy?"
    return question, [(f"{name} buys {{calc}} {things}.", f"{a}*{b}")], a * b


def _two_step(rng: random.Random, name: str, other: str, things: str) -> tuple[str, list[tuple[str, str]], int]:
    """A two-step problem: the second step uses the first step's result."""
    kind = rng.choice(("add_sub", "mul_add"))
    if kind == "add_sub":
        a, b = rng.randint(1, MAX_TERM), rng.randint(1, MAX_TERM)
        c = rng.randint(1, a + b - 1)
        question = (
            f"{name} has {a} {things} and finds {b} more, then gives {c} to {other}. "
            f"How many {things} does {name} have now?"
        )
        steps = [(f"After finding more, {name} has {{calc}} {things}.", f"{a}+{b}"),
                 (f"After giving some away, {name} has {{calc}} {things}.", f"{a + b}-{c}")]  # fmt: skip
        return question, steps, a + b - c
    a, b, c = rng.randint(2, MAX_FACTOR), rng.randint(2, MAX_FACTOR), rng.randint(1, MAX_TERM)
    box = rng.choice(CONTAINERS)
    question = (
        f"{name} buys {a} {box} with {b} {things} in each and already had {c} {things}. "
        f"How many {things} does {name} have in all?"
    )
    steps = [(f"{name} buys {{calc}} {things}.", f"{a}*{b}"),
             (f"In all {name} has {{calc}} {things}.", f"{a * b}+{c}")]  # fmt: skip
    return question, steps, a * b + c


def evaluate_expression(expression: str) -> int:
    """The value of a generator expression: integers joined by one of + - * (no precedence needed)."""
    for op in "+-*":
        if op in expression:
            left, right = expression.split(op)
            a, b = int(left), int(right)
            return a + b if op == "+" else a - b if op == "-" else a * b
    return int(expression)


def canonical(expression: str) -> str:
    """An expression with the operands of + and * in order ("5+3" -> "3+5"): the same calculation either way."""
    for op in "+*":
        if op in expression:
            return op.join(sorted(expression.split(op), key=int))
    return expression


def chain_of(row: dict[str, str]) -> tuple[str, ...]:
    """The calculations of a row's solution in order, each canonical: ("2+3", "5-1") for a two-step problem."""
    return tuple(canonical(expression) for expression in ANNOTATION.findall(row["answer"]))


def one_step_facts() -> set[str]:
    """Every calculation a one-step problem can ask for (canonical)."""
    terms, factors = range(1, MAX_TERM + 1), range(2, MAX_FACTOR + 1)
    return (
        {canonical(f"{a}+{b}") for a in terms for b in terms}
        | {f"{b + d}-{b}" for b in terms for d in terms}
        | {canonical(f"{a}*{b}") for a in factors for b in factors}
    )


def two_step_chains() -> set[tuple[str, str]]:
    """Every chain of calculations a two-step problem can ask for (canonical)."""
    terms, factors = range(1, MAX_TERM + 1), range(2, MAX_FACTOR + 1)
    add_sub = {(canonical(f"{a}+{b}"), f"{a + b}-{c}") for a in terms for b in terms for c in range(1, a + b)}
    mul_add = {(canonical(f"{a}*{b}"), canonical(f"{a * b}+{c}")) for a in factors for b in factors for c in terms}
    return add_sub | mul_add


def heldout_chains(seed: int, share: float = HELDOUT_CHAIN_SHARE) -> frozenset[tuple[str, str]]:
    """The two-step chains only the test split uses: a seeded `share` of each kind (+- and *+).

    A chain is kept out only while each of its steps stays in some training problem (a one-step fact or a
    step of a chain left to training): the test then asks for a new pair of steps, never an unseen fact.
    """
    rng = random.Random(seed + 3_000_017)
    facts = one_step_facts()
    chains = two_step_chains()
    uses: dict[str, int] = {}
    for chain in chains:
        for step in chain:
            uses[step] = uses.get(step, 0) + 1
    held: set[tuple[str, str]] = set()
    for kind in ("+", "*"):
        candidates = sorted(chain for chain in chains if kind in chain[0])
        rng.shuffle(candidates)
        wanted, kept = round(share * len(candidates)), 0
        for chain in candidates:
            if kept < wanted and all(step in facts or uses[step] > 1 for step in chain):
                held.add(chain)
                kept += 1
                for step in chain:
                    uses[step] -= 1
    if not held:
        raise ValueError("no two-step chain can be kept for the test split with these numbers")
    return frozenset(held)


def make_problem(
    rng: random.Random, two_step_share: float = TWO_STEP_SHARE, allow: Callable[[tuple[str, ...]], bool] | None = None
) -> dict[str, str]:
    """One GSM8K-format row {question, answer}: annotated solution sentences, then `#### gold`.

    `allow` decides which two-step chains may be drawn (redrawn until one is); one-step problems are not
    filtered, so the share of two-step problems stays `two_step_share`.
    """
    name, other = rng.sample(NAMES, 2)
    things = rng.choice(OBJECTS)
    builder = _two_step if rng.random() < two_step_share else _one_step
    for _ in range(10_000):
        question, steps, result = builder(rng, name, other, things)
        chain = tuple(canonical(expression) for _, expression in steps)
        if builder is _one_step or allow is None or allow(chain):
            break
    else:
        raise ValueError("no allowed two-step chain found")
    lines = []
    for sentence, expression in steps:
        value = evaluate_expression(expression)
        lines.append(sentence.format(calc=f"{expression}=<<{expression}={value}>>{value}"))
    return {"question": question, "answer": "\n".join(lines) + f"\n#### {result}"}


def generate_problems(
    seed: int,
    n: int,
    exclude: set[str] = frozenset(),
    two_step_share: float = TWO_STEP_SHARE,
    allow: Callable[[tuple[str, ...]], bool] | None = None,
) -> list[dict[str, str]]:
    """`n` distinct problems from `seed`, none whose question is in `exclude`, two-step chains as `allow` says."""
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot find {n} distinct problems (found {len(rows)}): ask for fewer")
        row = make_problem(rng, two_step_share, allow)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


def make_splits(seed: int = 0, n_train: int = 4000, n_test: int = 200) -> dict[str, list[dict[str, str]]]:
    """Train and test splits from one seed; no test question appears in train, no test two-step chain either."""
    held = heldout_chains(seed)
    train = generate_problems(seed, n_train, allow=lambda chain: chain not in held)
    # A derived seed keeps the test set the same whatever n_train is, up to the questions train already took.
    test = generate_problems(
        seed + 1_000_003, n_test, exclude={row["question"] for row in train}, allow=lambda chain: chain in held
    )
    return {"train": train, "test": test}


def write_dataset(output_dir: str | Path, seed: int = 0, n_train: int = 4000, n_test: int = 200) -> Path:
    """Write OUT/train.jsonl and OUT/test.jsonl (data.py reads the folder as `--dataset_name OUT`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in make_splits(seed, n_train, n_test).items():
        write_jsonl(output_dir / f"{split}.jsonl", rows)
    return output_dir


def cold_start_solution(row: dict[str, str], rng: random.Random, skip_share: float = SKIPPED_STEP_SHARE) -> dict[str, str]:
    """The row as the cold-start writer solves it: two-step solutions stop after step one in `skip_share` of cases."""
    body, _ = row["answer"].split("\n#### ")
    steps = body.splitlines()
    if len(steps) < 2 or rng.random() >= skip_share:
        return dict(row)
    first_result = steps[0].split(">>")[1].split()[0]
    return {"question": row["question"], "answer": f"{steps[0]}\n#### {first_result}"}


def write_cold_start(output_dir: str | Path, data_dir: str | Path, seed: int = 0) -> Path:
    """Write OUT/train.jsonl: DATA_DIR/train.jsonl's problems with the cold-start writer's solutions."""
    rng = random.Random(seed + 2_000_003)
    rows = [cold_start_solution(row, rng) for row in read_jsonl(Path(data_dir) / "train.jsonl")[0]]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(output_dir / "train.jsonl", rows)
    return output_dir


# ---------------------------------------------------------------------------------------------------------
# The tiny model: random weights, and a tokenizer that knows the prompt and these problems


# Big enough to learn one- and two-step sums in a few hundred steps, small enough for seconds per step on
# 2 CPU cores. Qwen2's digit-by-digit pre-tokenizer (tiny_model.QWEN_SPLIT) makes every number its digits.
MINIATURE_SHAPE = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    tie_word_embeddings=True, max_position_embeddings=512, initializer_range=0.02,
)  # fmt: skip
TOKENIZER_VOCAB = 1024


def tokenizer_texts(rows: list[dict[str, str]]) -> Iterator[str]:
    """What the tokenizer learns from: the system prompt, the chat roles, the problems and their SFT answers."""
    from data import sft_completion
    from prompts import SYSTEM_PROMPT

    yield SYSTEM_PROMPT
    yield "system user assistant"
    for row in rows:
        yield row["question"]
        yield row["answer"]
        yield sft_completion(row["answer"]) or ""


def build_model(output_dir: str | Path, data_dir: str | Path, seed: int = 0, shape: dict | None = None) -> Path:
    """Write a random-weight Qwen2 model and a tokenizer trained on `data_dir/train.jsonl` to `output_dir`."""
    from tiny_model import build_qwen2_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(TOKENIZER_VOCAB, tokenizer_texts(read_jsonl(Path(data_dir) / "train.jsonl")[0]))
    model = build_qwen2_model(tokenizer, shape or MINIATURE_SHAPE, seed=seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    """`data OUT` writes the problems, `cold-start OUT --data DIR` the SFT set, `model OUT --data DIR` the model."""
    parser = argparse.ArgumentParser(prog="miniature.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_data = commands.add_parser("data", help="write OUT/train.jsonl and OUT/test.jsonl")
    make_data.add_argument("output_dir")
    make_data.add_argument("--seed", type=int, default=0)
    make_data.add_argument("--train", type=int, default=4000, help="training problems (default 4000)")
    make_data.add_argument("--test", type=int, default=200, help="test problems (default 200)")
    make_cold_start = commands.add_parser("cold-start", help="write OUT/train.jsonl: the cold-start writer's solutions")
    make_cold_start.add_argument("output_dir")
    make_cold_start.add_argument("--data", required=True, help="folder with train.jsonl (the problems to solve)")
    make_cold_start.add_argument("--seed", type=int, default=0)
    make_model = commands.add_parser("model", help="write a random tiny Qwen2 model and its tokenizer to OUT")
    make_model.add_argument("output_dir")
    make_model.add_argument("--data", required=True, help="folder with train.jsonl (the tokenizer learns from it)")
    make_model.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "data":
        if args.train < 1 or args.test < 1:
            parser.error("--train and --test must be positive")
        print(write_dataset(args.output_dir, args.seed, args.train, args.test))
        return
    if not (Path(args.data) / "train.jsonl").is_file():
        parser.error(f"{args.data}: no train.jsonl (write one with: python miniature.py data {args.data})")
    if args.command == "cold-start":
        print(write_cold_start(args.output_dir, args.data, args.seed))
    else:
        print(build_model(args.output_dir, args.data, args.seed))


if __name__ == "__main__":
    main()
