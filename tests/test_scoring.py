"""scoring.py: evaluate.py's scorer of one completion, the exact check of the reward."""

import pytest

from scoring import score_completion


def scores(strict: bool, numeric: bool, flexible: bool, formatted: bool) -> dict[str, bool]:
    """score_completion's result, in its key order."""
    return {"strict": strict, "numeric": numeric, "flexible": flexible, "formatted": formatted}


FORMATTED = "<reasoning>\n34 + 12 = 46\n</reasoning>\n<validate>\nok\n</validate>\n<answer>\n{}\n</answer>"


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (FORMATTED.format("46"), "46", scores(True, True, True, True)),
        # GSM8K's thousands commas: not the blog's exact match, but the same number
        ("<answer>1450000</answer>", "1,450,000", scores(False, True, True, False)),
        ("<answer>1,450,000</answer>", "1,450,000", scores(True, True, True, False)),
        ("<answer>-5</answer>", "-5", scores(True, True, True, False)),
        ("<answer>5</answer>", "-5", scores(False, False, False, False)),
        ("<answer> $18.0 </answer>", "18", scores(False, True, True, False)),
        ("<answer>18.</answer>", "18", scores(False, True, True, False)),
        # no <answer>: only the flexible score can find the number
        ("So she has 72 apples.", "72", scores(False, False, True, False)),
        ("It drops to -5 degrees", "-5", scores(False, False, True, False)),
        ("<answer>seven</answer>", "7", scores(False, False, False, False)),
        ("", "7", scores(False, False, False, False)),
    ],
)
def test_score_completion(completion, gold, expected):
    assert score_completion(completion, gold) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        # the last number counts, not the first
        ("<answer>72</answer> wait, 70", "72", scores(True, True, False, False)),
        # the first <answer> counts, as in the reward
        ("<answer>3</answer><answer>7</answer>", "7", scores(False, False, True, False)),
    ],
)
def test_which_of_several_answers_counts(completion, gold, expected):
    assert score_completion(completion, gold) == expected


@pytest.mark.parametrize(
    ("completion", "formatted"),
    [
        ("<reasoning>a</reasoning><validate>b</validate><answer>1</answer>", True),
        ("<answer>1</answer><reasoning>a</reasoning><validate>b</validate>", False),  # out of order
        ("<reasoning>a</reasoning><validate>b<answer>1</answer>", False),  # </validate> missing
        ("<reasoning>a</reasoning><answer>1</answer>", False),  # <validate> missing
        ("<reasoning>a<validate>b</reasoning></validate><answer>1</answer>", False),  # sections overlap
    ],
)
def test_formatted_needs_all_three_sections_in_order(completion, formatted):
    assert score_completion(completion, "1")["formatted"] is formatted
