"""Reward functions for GRPO on GSM8K, and the answer extraction the evaluator shares.

`custom_reward_func` is the reference blog's hand-made reward, ported formula for formula, with one fix:
completion i is scored against its own gold answer `answer[i]` (the blog compared every completion with
`answer[0]`). Its seven rules are also available one by one, so a run can pick and weight them:

    correctness      +5.0 when the <answer> text equals the gold answer
    integer          +0.5 when the <answer> text is made of digits only
    reasoning_tags   the blog multiplies by 1.25 when <reasoning>...</reasoning> is present (alone: 1.0)
    reasoning_length up to +10 for 5..1024 words of reasoning, 5.0 from 1024 words on (the blog's bounds)
    validate_tags    the blog multiplies by 1.25 when <validate>...</validate> is present (alone: 1.0)
    validate_length  up to +3 for 5..256 words of validation
    aha              the blog multiplies by 10 when validation says wait/but/rethink (alone: 1.0)

Every function takes TRL's reward signature `(completions, answer, **kwargs) -> list[float]`, accepts
conversational (`[[{"role": "assistant", "content": ...}], ...]`) or plain-string completions, and returns
one finite float per completion for any input. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

# ---------------------------------------------------------------------------------------------------------
# Answer extraction (shared with evaluate.py, so the strict metric is exactly the reward's correctness check)


def completion_text(completion: Any) -> str:
    """Return the text of one completion: a string, a message dict, or a list of messages (last wins)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        if all(isinstance(part, dict) and "text" in part for part in completion):
            # Multimodal-style content parts: [{"type": "text", "text": ...}, ...]
            return "".join(completion_text(part["text"]) for part in completion)
        return completion_text(completion[-1])
    return str(completion)


def extract_xml_answer(text: str, tag: str = "answer") -> str:
    """Return the stripped text inside the first `<tag>...</tag>`, or "" when there is none.

    Same result as the blog's `re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)`, in linear time: the
    regex is quadratic on a long completion that repeats an opening tag and never closes it.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    start = text.find(opening)
    if start < 0:
        return ""
    end = text.find(closing, start + len(opening))
    if end < 0:
        return ""
    return text[start + len(opening) : end].strip()


def has_tag_pair(text: str, tag: str) -> bool:
    """The blog's tag check: both `<tag>` and `</tag>` occur somewhere, in any order."""
    return f"<{tag}>" in text and f"</{tag}>" in text


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalize_number(text: str | None) -> str | None:
    """Read `text` as one number and return it in canonical form ("1,234.50" -> "1234.5", "$18." -> "18").

    Thousands commas, `$`, spaces and a trailing `.` are removed; `18.0` and `18` both give "18". Returns
    None when what is left is not a plain decimal number.
    """
    if text is None:
        return None
    cleaned = re.sub(r"[,\s$]", "", str(text)).rstrip(".")
    if not _NUMBER.fullmatch(cleaned) or not cleaned.isascii():
        return None
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    negative = cleaned.startswith("-")
    digits = cleaned.lstrip("-").lstrip("0") or "0"
    if digits.startswith("."):
        digits = "0" + digits
    return "-" + digits if negative and digits != "0" else digits


_LAST_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def last_number(text: str) -> str | None:
    """The last number anywhere in `text`, normalized (lm-evaluation-harness's flexible-extract style)."""
    for candidate in reversed(_LAST_NUMBER.findall(text)):
        normalized = normalize_number(candidate)
        if normalized is not None:
            return normalized
    return None


# ---------------------------------------------------------------------------------------------------------
# Word counts, as the blog: nltk.word_tokenize, with an offline fallback that never downloads


def _unguarded(rules: Any) -> Any:
    """NLTK's tokenizer rules compiled again by the same `regex` engine, without NLTK's per-call timeout guard."""
    import regex  # nltk's own dependency: the engine behind its patterns (same Unicode rules for \w, \d, ...)

    if hasattr(rules, "pattern") and hasattr(rules, "flags"):
        return regex.compile(rules.pattern, rules.flags)
    if isinstance(rules, (list, tuple)):
        return type(rules)(_unguarded(rule) for rule in rules)
    return rules


def _fast_treebank_tokenizer():
    """NLTK's word tokenizer with its rules run directly rather than through `nltk.redos`' timeout wrapper.

    NLTK 3.10 routes every regex call through a wrapper that enforces a wall-clock timeout; for these fixed,
    well-behaved patterns it only costs time. Same tokens (the tests compare against nltk.word_tokenize),
    about 1.5x faster, and word counting is nearly all of the reward's cost.
    """
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    try:
        for name in ("STARTING_QUOTES", "ENDING_QUOTES", "PUNCTUATION", "PARENS_BRACKETS", "CONVERT_PARENTHESES",
                     "DOUBLE_DASHES", "CONTRACTIONS2", "CONTRACTIONS3"):  # fmt: skip
            setattr(tokenizer, name, _unguarded(getattr(NLTKWordTokenizer, name)))
    except (AttributeError, ImportError, ValueError):  # another nltk version: keep its own rules as they are
        return NLTKWordTokenizer()
    return tokenizer


@functools.cache
def _word_tokenizer() -> Callable[[str], list[str]]:
    """nltk.word_tokenize when punkt_tab is installed, else a data-free approximation (announced once)."""
    import nltk

    words = _fast_treebank_tokenizer()
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")

        def word_tokenize(text: str) -> list[str]:  # nltk.word_tokenize: punkt sentences, then words
            return [token for sentence in nltk.sent_tokenize(text) for token in words.tokenize(sentence)]

        return word_tokenize
    except LookupError:
        pass
    warnings.warn(
        "NLTK's punkt_tab data is not installed: reward word counts use a regex sentence splitter instead "
        "of nltk.word_tokenize (counts may differ slightly). Install it once with "
        "`python -m nltk.downloader punkt_tab`, or point NLTK_DATA at a copy.",
        stacklevel=2,
    )
    sentence_end = re.compile(r"(?<=[.!?])\s+")

    def approximate_word_tokenize(text: str) -> list[str]:
        return [token for sentence in sentence_end.split(text) for token in words.tokenize(sentence)]

    return approximate_word_tokenize


def count_words(text: str, cap: int | None = None) -> int:
    """Number of `nltk.word_tokenize` tokens in `text`; any count >= `cap` may be returned as `cap`.

    The tokenizer only ever splits whitespace-separated chunks further, so when the chunks alone reach
    `cap` the exact count is not needed: the blog's bonuses are flat above their caps.
    """
    if cap is not None and len(text.split()) >= cap:
        return cap
    return len(_word_tokenizer()(text))


# ---------------------------------------------------------------------------------------------------------
# The blog's rules, one by one

CORRECT_REWARD = 5.0
INTEGER_REWARD = 0.5
TAG_MULTIPLIER = 1.25
AHA_MULTIPLIER = 10.0
REASONING_MIN_WORDS, REASONING_MAX_WORDS = 5, 1024
REASONING_MAX_BONUS = 10.0  # reached just below 1024 words...
REASONING_CAPPED_BONUS = 5.0  # ...while 1024 words and more get 5.0: the blog's odd bounds, kept as they are
VALIDATE_MIN_WORDS, VALIDATE_MAX_WORDS = 5, 256
VALIDATE_MAX_BONUS = 3.0
# `(?=.{20})` accepts exactly what the blog's `(?=.{20,})` accepts, without scanning to the end of the text.
AHA_PATTERN = re.compile(r"(wait|but|rethink)(?=.{20})", re.DOTALL)


def length_bonus(word_count: int, low: int, high: int, top: float, beyond: float) -> float:
    """0 up to `low` words, linear from there towards `top` at `high` words, `beyond` from `high` words on."""
    if word_count <= low:
        return 0.0
    if word_count >= high:
        return beyond
    return (word_count - low) / (high - low) * top


def reasoning_length_bonus(word_count: int) -> float:
    """The blog's reasoning bonus: 0 up to 5 words, linear up to ~10 below 1024 words, 5.0 from 1024 on."""
    return length_bonus(
        word_count, REASONING_MIN_WORDS, REASONING_MAX_WORDS, REASONING_MAX_BONUS, REASONING_CAPPED_BONUS
    )


def validate_length_bonus(word_count: int) -> float:
    """The blog's validation bonus: 0 up to 5 words, linear up to 3.0 at 256 words and more."""
    return length_bonus(word_count, VALIDATE_MIN_WORDS, VALIDATE_MAX_WORDS, VALIDATE_MAX_BONUS, VALIDATE_MAX_BONUS)


def has_aha(validate: str) -> bool:
    """The blog's "aha" check on the <validate> text: wait/but/rethink followed by 20 more characters."""
    return AHA_PATTERN.search(validate.lower()) is not None


def is_correct(extracted: str, gold: Any, match: str = "exact") -> bool:
    """Compare an extracted answer with the gold one: the blog's exact string match, or numerically."""
    if gold is None:
        return False
    if match == "numeric":
        value = normalize_number(extracted)
        return value is not None and value == normalize_number(str(gold))
    return extracted == str(gold)


def score_blog_reward(text: str, gold: Any, match: str = "exact") -> float:
    """The blog's combined reward for one completion text against its gold answer."""
    answer = extract_xml_answer(text, "answer")
    reward = 0.0
    if is_correct(answer, gold, match):
        reward += CORRECT_REWARD
    if answer.isdigit():
        reward += INTEGER_REWARD

    validate_bonus = 0.0
    has_validate = has_tag_pair(text, "validate")
    validate = extract_xml_answer(text, "validate").lower() if has_validate else ""
    if has_validate:
        reward *= TAG_MULTIPLIER
        validate_bonus = validate_length_bonus(count_words(validate, cap=VALIDATE_MAX_WORDS))

    reasoning_bonus = 0.0
    if has_tag_pair(text, "reasoning"):
        reward *= TAG_MULTIPLIER
        reasoning = extract_xml_answer(text, "reasoning").lower()
        reasoning_bonus = reasoning_length_bonus(count_words(reasoning, cap=REASONING_MAX_WORDS))

    total = reward + reasoning_bonus + validate_bonus
    if has_validate and AHA_PATTERN.search(validate):
        total *= AHA_MULTIPLIER
    return total


# ---------------------------------------------------------------------------------------------------------
# TRL reward functions


def _golds(answer: Any, n: int) -> list[Any]:
    """One gold answer per completion: TRL repeats the dataset column per completion; a scalar is broadcast."""
    if answer is None or isinstance(answer, (str, int, float)):
        return [answer] * n
    golds = list(answer)
    if len(golds) != n:
        raise ValueError(f"got {n} completions but {len(golds)} gold answers; they must match one to one")
    return golds


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def custom_reward_func(prompts=None, completions=(), answer=None, **kwargs) -> list[float]:
    """The blog's combined reward, completion i scored against answer[i] with the exact string match."""
    texts = _texts(completions)
    return [score_blog_reward(t, g) for t, g in zip(texts, _golds(answer, len(texts)))]


def custom_numeric_reward_func(prompts=None, completions=(), answer=None, **kwargs) -> list[float]:
    """The blog's combined reward with a numeric answer match ("1,000" == "1000", "18.0" == "18")."""
    texts = _texts(completions)
    return [score_blog_reward(t, g, match="numeric") for t, g in zip(texts, _golds(answer, len(texts)))]


def correctness_reward(completions=(), answer=None, **kwargs) -> list[float]:
    """+5.0 when the <answer> text equals the gold answer exactly."""
    texts = _texts(completions)
    golds = _golds(answer, len(texts))
    return [CORRECT_REWARD if is_correct(extract_xml_answer(t), g) else 0.0 for t, g in zip(texts, golds)]


def integer_reward(completions=(), **kwargs) -> list[float]:
    """+0.5 when the <answer> text is made of digits only."""
    return [INTEGER_REWARD if extract_xml_answer(t).isdigit() else 0.0 for t in _texts(completions)]


def reasoning_tags_reward(completions=(), **kwargs) -> list[float]:
    """1.0 when <reasoning> and </reasoning> are both present."""
    return [1.0 if has_tag_pair(t, "reasoning") else 0.0 for t in _texts(completions)]


def validate_tags_reward(completions=(), **kwargs) -> list[float]:
    """1.0 when <validate> and </validate> are both present."""
    return [1.0 if has_tag_pair(t, "validate") else 0.0 for t in _texts(completions)]


def reasoning_length_reward(completions=(), **kwargs) -> list[float]:
    """The blog's bonus for the word count inside <reasoning>...</reasoning>."""
    return [
        reasoning_length_bonus(count_words(extract_xml_answer(t, "reasoning").lower(), cap=REASONING_MAX_WORDS))
        for t in _texts(completions)
    ]


def validate_length_reward(completions=(), **kwargs) -> list[float]:
    """The blog's bonus for the word count inside <validate>...</validate>."""
    return [
        validate_length_bonus(count_words(extract_xml_answer(t, "validate").lower(), cap=VALIDATE_MAX_WORDS))
        for t in _texts(completions)
    ]


def aha_reward(completions=(), **kwargs) -> list[float]:
    """1.0 when the <validate> text says wait/but/rethink with at least 20 characters after it."""
    return [
        1.0 if has_tag_pair(t, "validate") and has_aha(extract_xml_answer(t, "validate")) else 0.0
        for t in _texts(completions)
    ]


REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "custom": custom_reward_func,
    "custom_numeric": custom_numeric_reward_func,
    "correctness": correctness_reward,
    "integer": integer_reward,
    "reasoning_tags": reasoning_tags_reward,
    "reasoning_length": reasoning_length_reward,
    "validate_tags": validate_tags_reward,
    "validate_length": validate_length_reward,
    "aha": aha_reward,
}
DEFAULT_REWARD_FUNCS = ["custom"]


def get_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """Resolve reward names: registry names, or `path/to/file.py:function` for a reward of your own.

    An unknown name is a ValueError listing the registry's choices.
    """
    unknown = [name for name in names if ":" not in name and name not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward function(s) {', '.join(map(repr, unknown))}; choose from: {reward_names()}")
    if not names:
        raise ValueError(f"no reward function given; choose from: {reward_names()}")
    return [_reward_from_file(name) if ":" in name else REWARD_FUNCS[name] for name in names]


def _reward_from_file(name: str) -> Callable[..., list[float]]:
    """The function `function` of the Python file in `path/to/file.py:function`."""
    import importlib.util
    from pathlib import Path

    path, _, function = name.rpartition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path) if path.endswith(".py") else None
    if spec is None or not Path(path).is_file():
        raise ValueError(f"reward {name!r}: no such Python file {path!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(f"reward {name!r}: {error.filename or path}, line {error.lineno}: {error.msg}") from None
    except Exception as error:  # noqa: BLE001 -- the user's module-level code: any failure is theirs to see
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"reward {name!r}: importing {path} failed: {type(error).__name__}: {first}") from None
    if not callable(getattr(module, function, None)):
        raise ValueError(f"reward {name!r}: {path} has no function {function!r}")
    return getattr(module, function)


def reward_names() -> str:
    """The registry's names, comma separated, for help texts and error messages."""
    return ", ".join(REWARD_FUNCS)

