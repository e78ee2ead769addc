"""Reward throughput: rewards.custom_reward_func against the blog's own code, on the same 10k completions.

    # From the repo root, with NLTK's punkt_tab data (the real nltk.word_tokenize, as in training):
    NLTK_DATA=../shared/nltk_data python bench/reward_speed.py

    # Fewer completions, more repeats, and a cProfile of both functions:
    NLTK_DATA=../shared/nltk_data python bench/reward_speed.py --n 2000 --repeat 5 --profile

The baseline is the blog's reward written the blog's way (three `re.search(rf"<{tag}>(.*?)</{tag}>")`
extractions and two `nltk.word_tokenize` calls per completion, tags or not), with the one fix we ship:
completion i is compared with answer[i]. The completions are generated here, seeded: about 100-600 words
of GSM8K-style arithmetic prose, mostly in the three-section format, some cut off, some with tags missing,
some plain text, answers right, wrong or written with commas, validations that say wait/but/rethink.

Steps: 1. with punkt_tab available, assert both functions give the same reward (within 1e-9) for every
completion; without it, say so, give the baseline the same offline tokenizer rewards.py falls back to,
and compare anyway. 2. time each over all completions in chunks, the two functions alternating chunk by
chunk and each chunk keeping its best of --repeat runs, so that a busy neighbour on a shared machine
slows both alike. 3. print completions/s, peak RSS and Python allocation peaks, and the time both take on
a degenerate (looping) completion. The last line is the headline ratio. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import platform
import pstats
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# Run as `python bench/reward_speed.py` from the repo root: the repo's modules live one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nltk

import blog_reward
from benchutil import peak_rss_mib
import rewards
from blog_reward import blog_reward_func

# ---------------------------------------------------------------------------------------------------------
# Realistic completions, seeded

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Mark", "Albert", "Ken", "Tina", "Mr. Smith", "Dr. Lee"]
ITEMS = ["clips", "apples", "pages", "cookies", "marbles", "tickets", "books", "eggs", "dollars", "miles", "cups"]
FILLERS = [
    "Let's break this down step by step.",
    "First, we need to find out how many there are in total.",
    "We know that the price per item is fixed, so we can multiply.",
    "That's the amount for one week; we still need the whole month.",
    "Note that she doesn't count the ones she gave away (they're not hers anymore).",
    "So the remaining amount is what we're looking for, i.e. the difference.",
    "In other words, the rate is 5 per hour, e.g. 10 in two hours.",
    'The problem says "each", which means we multiply rather than add.',
    "Now, let's put it all together: the total is the sum of both parts.",
    "The U.S. price was $1,250.75 before the 20% discount was applied.",
]
VALIDATIONS = [
    "Let me check the arithmetic again: each step follows from the previous one.",
    "The units match, and the total is consistent with the question.",
    "Going back over the problem statement, every quantity has been used once.",
    "I verified the multiplication by adding the numbers one at a time.",
    "The answer is a whole number, as expected for a count of items.",
]
AHA = [
    "Wait, I should double-check whether the discount applies before or after tax.",
    "But the question asks for the amount left, not the amount spent, so let me recompute.",
    "Hmm, let me rethink the second step: the rate was per hour, not per day.",
    "wait, did I count the first week twice? Going back over it, no, each week is counted once.",
    "That seems right, but I want to be sure about the subtraction at the end.",
]


def arithmetic_sentence(rng: random.Random) -> str:
    """One GSM8K-style step: a quantity, an operation, its result, sometimes with money or commas."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 120), rng.randint(2, 60)
    op = rng.choice(["+", "-", "*", "/"])
    if op == "+":
        return f"{name} has {a} {item} and gets {b} more, so {a} + {b} = {a + b} {item}."
    if op == "-":
        return f"After giving away {b}, {name} has {a + b} - {b} = {a} {item} left."
    if op == "*":
        total = a * b * rng.choice([1, 1, 1, 25])  # now and then a total in the thousands
        return f"Each of the {a} boxes holds {b} {item}, so there are {a} * {b} = {total:,} {item} in total."
    return f"Splitting {a * b} {item} equally among {b} friends gives {a * b}/{b} = {a} each (${a}.50 per friend)."


def prose(rng: random.Random, n_words: int) -> str:
    """About n_words words of reasoning, arithmetic steps mixed with connecting sentences."""
    sentences, count = [], 0
    while count < n_words:
        sentence = arithmetic_sentence(rng) if rng.random() < 0.6 else rng.choice(FILLERS)
        sentences.append(sentence)
        count += len(sentence.split())
    return ("\n" if rng.random() < 0.3 else " ").join(sentences)


def validation(rng: random.Random, n_words: int) -> str:
    """A validation paragraph; about a third of them say wait / but / rethink, as the prompt asks."""
    parts = [rng.choice(AHA)] if rng.random() < 0.35 else []
    while sum(len(p.split()) for p in parts) < n_words:
        parts.append(rng.choice(VALIDATIONS))
    rng.shuffle(parts)
    return " ".join(parts)


def written_answer(rng: random.Random, gold: int) -> str:
    """The <answer> text: mostly the gold number, else a wrong one, or the right one written differently."""
    roll = rng.random()
    if roll < 0.45:
        return str(gold)
    if roll < 0.75:
        return str(gold + rng.choice([-10, -1, 1, 2, 12, gold]))
    if roll < 0.85:
        return f"{gold:,}"  # equals the gold string only when gold < 1000
    return rng.choice([f"${gold}", f"{gold}.0", f"{gold} {rng.choice(ITEMS)}", f"The answer is {gold}."])


def make_completion(rng: random.Random) -> tuple[str, str]:
    """(completion text, gold answer) of one of the shapes a model in GRPO training produces."""
    gold = rng.choice([rng.randint(1, 200), rng.randint(1, 200), rng.randint(200, 50_000)])
    gold_text = f"{gold:,}" if gold >= 1000 and rng.random() < 0.1 else str(gold)  # a few GSM8K golds have commas
    total = rng.randint(100, 600)
    validate_words = rng.randint(max(10, total // 8), max(20, total // 3))
    reasoning, validate = prose(rng, total - validate_words), validation(rng, validate_words)
    answer = written_answer(rng, gold)
    shape = rng.random()
    sections = {
        "reasoning": f"<reasoning>\n{reasoning}\n</reasoning>",
        "validate": f"<validate>\n{validate}\n</validate>",
        "answer": f"<answer>\n{answer}\n</answer>",
    }
    if shape < 0.65:  # the requested format
        text = "\n".join(sections.values())
    elif shape < 0.73:  # validation skipped
        text = f"{sections['reasoning']}\n{sections['answer']}"
    elif shape < 0.81:  # cut off at max_completion_length, inside the reasoning or the validation
        full = f"{sections['reasoning']}\n<validate>\n{validate}"
        text = full[: rng.randint(len(full) // 2, len(full))]
    elif shape < 0.85:  # only the answer tag
        text = f"{reasoning}\n<answer>{answer}</answer>"
    elif shape < 0.88:  # sections out of order, answer given twice
        text = f"<answer>{answer}</answer>\n{sections['validate']}\n{sections['reasoning']}\n<answer>{gold}</answer>"
    else:  # plain text, no tags at all
        text = f"{reasoning} {validate} So the answer is {answer}."
    return text, gold_text


def make_completions(n: int, seed: int) -> tuple[list[list[dict[str, str]]], list[str]]:
    """n completions in TRL's conversational shape, and one gold answer each."""
    rng = random.Random(seed)
    pairs = [make_completion(rng) for _ in range(n)]
    return [[{"role": "assistant", "content": text}] for text, _ in pairs], [gold for _, gold in pairs]


def punkt_available() -> bool:
    """True when NLTK finds the English punkt_tab data (NLTK_DATA or its default paths)."""
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return True
    except LookupError:
        return False


# ---------------------------------------------------------------------------------------------------------
# Measuring

RewardFunc = Callable[..., list[float]]


def timed(func: RewardFunc, completions: list, golds: list[str]) -> float:
    """Seconds for one call; garbage from the previous call is collected first, outside the clock."""
    gc.collect()
    start = time.perf_counter()
    func(prompts=None, completions=completions, answer=golds)
    return time.perf_counter() - start


def allocation_peak_mib(func: RewardFunc, completions: list, golds: list[str]) -> float:
    """Peak of Python allocations during one call (tracemalloc): what the function itself holds at once."""
    tracemalloc.start()
    func(prompts=None, completions=completions, answer=golds)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def profile(name: str, func: RewardFunc, completions: list, golds: list[str], top: int = 12) -> None:
    """Where the time goes: cProfile's top functions by cumulative time, the tokenizer's internals included."""
    profiler = cProfile.Profile()
    profiler.runcall(func, prompts=None, completions=completions, answer=golds)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(top)
    print(f"\n--- cProfile: {name} on {len(completions)} completions ---")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of completions (default: 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each function; the best counts")
    parser.add_argument("--chunk", type=int, default=500, help="completions per timed call (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated completions")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of both functions")
    args = parser.parse_args(argv)

    has_punkt = punkt_available()
    print(f"python {platform.python_version()} on {platform.machine()}, nltk {nltk.__version__}")
    if has_punkt:
        blog_reward.word_tokenize = nltk.word_tokenize
        print("word counts: nltk.word_tokenize with punkt_tab")
    else:
        print("word counts: punkt_tab NOT found (set NLTK_DATA): both use rewards.py's offline approximation")
        # rewards.py falls back to this data-free approximation; the baseline must count words the same way.
        blog_reward.word_tokenize = rewards._word_tokenizer()

    rss_start = peak_rss_mib()
    completions, golds = make_completions(args.n, args.seed)
    texts = [c[0]["content"] for c in completions]
    words = sorted(len(t.split()) for t in texts)
    print(
        f"{args.n} completions (seed {args.seed}): {sum(words) / len(words):.0f} words on average, "
        f"{words[0]}..{words[-1]}, {sum(map(len, texts)) / 2**20:.1f} MiB of text; "
        f"{sum('<validate>' in t and '</validate>' in t for t in texts)} with a validate pair, "
        f"{sum('<' not in t for t in texts)} without any tag"
    )
    rss_data = peak_rss_mib()

    funcs: dict[str, RewardFunc] = {"custom_reward_func": rewards.custom_reward_func, "blog baseline": blog_reward_func}
    # 1. Same rewards? One untimed pass each; the RSS high-water mark is read after each.
    results: dict[str, list[float]] = {}
    rss_after: dict[str, float] = {}
    for name, func in funcs.items():
        results[name] = func(prompts=None, completions=completions, answer=golds)
        rss_after[name] = peak_rss_mib()
    ours, theirs = results["custom_reward_func"], results["blog baseline"]
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs)) if abs(a - b) > 1e-9]
    if has_punkt:
        assert not mismatches, f"rewards differ on {len(mismatches)} completions, e.g. #{mismatches[:5]}"
        print(f"check: both give the same reward on all {args.n} completions (within 1e-9)")
    else:
        print(f"check not asserted (no punkt_tab): {len(mismatches)} of {args.n} rewards differ")
    print(f"rewards: mean {sum(ours) / args.n:.2f}, {sum(v > 0 for v in ours)} above zero, max {max(ours):.1f}")

    # 2. Timing. The machine may be shared, so the functions alternate chunk by chunk (a busy stretch hits
    # both alike) and each chunk keeps its best of --repeat runs; the sum is a best run over all completions.
    chunks = [slice(i, i + args.chunk) for i in range(0, args.n, args.chunk)]
    best = {name: [float("inf")] * len(chunks) for name in funcs}
    passes = {name: [0.0] * args.repeat for name in funcs}
    for run in range(args.repeat):
        for index, chunk in enumerate(chunks):
            order = list(funcs.items()) if (run + index) % 2 == 0 else list(funcs.items())[::-1]
            for name, func in order:
                seconds = timed(func, completions[chunk], golds[chunk])
                best[name][index] = min(best[name][index], seconds)
                passes[name][run] += seconds
    total = {name: sum(times) for name, times in best.items()}

    print(f"\nbest of {args.repeat} runs over {args.n} completions (chunks of {args.chunk}, alternating):")
    for name in funcs:
        per_second = args.n / total[name]
        whole = " / ".join(f"{t:.1f}" for t in passes[name])
        print(
            f"  {name:<20} {total[name]:7.2f} s  {per_second:6.0f} completions/s  {1e3 / per_second:6.3f} ms each"
            f"   (whole passes: {whole} s)"
        )
    print(
        f"peak RSS: {rss_start:.0f} MiB after imports, {rss_data:.0f} MiB with the completions, "
        + ", ".join(f"{rss_after[name]:.0f} MiB after {name}" for name in funcs)
        + " (a process-wide high-water mark: each figure includes the ones before)"
    )
    # tracemalloc slows every allocation several times over: a slice is enough, both functions work per item.
    sample = min(args.n, 1000)
    allocations = {
        name: allocation_peak_mib(func, completions[:sample], golds[:sample]) for name, func in funcs.items()
    }
    print(
        f"Python allocation peak per call on {sample} completions (tracemalloc): "
        + ", ".join(f"{name} {mib:.2f} MiB" for name, mib in allocations.items())
    )

    # Not in the headline: the blog's lazy regex is quadratic on an opening tag repeated and never closed,
    # which a looping model can emit; how much that matters depends on max_completion_length.
    for repeats in (170, 2000):  # ~512 and ~4k tokens of "<answer>"
        degenerate = [[{"role": "assistant", "content": "<answer>" * repeats}]]
        times = {name: min(timed(func, degenerate, ["1"]) for _ in range(3)) for name, func in funcs.items()}
        print(
            f"one degenerate completion ({8 * repeats} chars of '<answer>', never closed): "
            + ", ".join(f"{name} {1e3 * t:.2f} ms" for name, t in times.items())
        )

    if args.profile:
        for name, func in funcs.items():
            profile(name, func, completions, golds)

    ratio = total["blog baseline"] / total["custom_reward_func"]
    print(f"speedup: {ratio:.2f}x (custom_reward_func vs blog-style baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
