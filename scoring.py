"""evaluate.py's scoring: the pure scorer of one completion, the record of one example, per-model summaries.

`score_completion` is the exact check of the reward (rewards.extract_xml_answer + rewards.is_correct), so the
accuracy evaluate.py reports and the held-out accuracy train.py logs (heldout.py) cannot disagree with what
the reward pays for. The base model's records are cached per setting by eval_cache.py.
Pure Python: no torch, no transformers.
"""

from __future__ import annotations

from typing import Any

from rewards import extract_xml_answer, is_correct, last_number, normalize_number

BLOG_STRICT = {"base": 0.0887, "tuned": 0.6528}  # greedy GSM8K test accuracy reported by the blog
FORMAT_TAGS = ("reasoning", "validate", "answer")
METRICS = ("strict", "numeric", "flexible", "formatted", "mean_tokens", "cut_off")


# ---------------------------------------------------------------------------------------------------------
# Scoring


def is_formatted(text: str) -> bool:
    """True when <reasoning>, <validate> and <answer> sections (opening and closing tags) appear in that order."""
    position = 0
    for tag in FORMAT_TAGS:
        for marker in (f"<{tag}>", f"</{tag}>"):
            position = text.find(marker, position)
            if position < 0:
                return False
            position += len(marker)
    return True


def score_completion(completion: str, gold: str) -> dict[str, bool]:
    """Score one completion against its gold answer: strict, numeric, flexible, formatted (all bools)."""
    answer = extract_xml_answer(completion)
    gold_number = normalize_number(gold)
    flexible = last_number(completion)
    return {
        "strict": is_correct(answer, gold),
        "numeric": is_correct(answer, gold, match="numeric"),
        "flexible": flexible is not None and flexible == gold_number,
        "formatted": is_formatted(completion),
    }


def example_record(
    index: int, question: str, gold: str, completion: str, tokens: int, cut_off: bool, token_ids: list[int] | None = None
) -> dict[str, Any]:
    """One JSONL line: the problem, the completion, what was extracted from it, its scores and its token ids."""
    answer = extract_xml_answer(completion)
    return {
        "index": index,
        "question": question,
        "gold": gold,
        "completion": completion,
        "answer": answer,
        "answer_number": normalize_number(answer),
        "last_number": last_number(completion),
        **score_completion(completion, gold),
        "tokens": tokens,
        "cut_off": cut_off,
        "token_ids": token_ids,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, float | int]:
    """Per-model totals: the share of examples passing each score, mean completion tokens, share cut off."""
    n = len(records)
    totals: dict[str, float | int] = {"n": n}
    for metric in METRICS:
        key = "tokens" if metric == "mean_tokens" else metric
        totals[metric] = sum(float(r[key]) for r in records) / n if n else 0.0
    return totals


def format_table(summaries: dict[str, dict[str, float | int]]) -> str:
    """One row per model, one column per metric."""
    columns = ("n", *METRICS)
    lines = ["model  " + "  ".join(f"{c:>11}" for c in columns)]
    for label, totals in summaries.items():
        cells = [f"{totals['n']:>11d}"] + [
            f"{totals[c]:>11.1f}" if c == "mean_tokens" else f"{totals[c]:>11.4f}" for c in METRICS
        ]
        lines.append(f"{label:<5}  " + "  ".join(cells))
    return "\n".join(lines)


MEANING = (
    f"strict = the blog's metric (<answer> text == gold exactly; blog, all 1319 test problems: base "
    f"{BLOG_STRICT['base']} -> tuned {BLOG_STRICT['tuned']}); numeric = <answer> read as a number; flexible = last "
    f"number in the completion; formatted = reasoning/validate/answer tags in order; cut_off = share stopped by "
    f"--max_new_tokens."
)
