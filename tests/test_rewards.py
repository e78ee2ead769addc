"""The blog's reward, rule by rule, with hand-computed values; the answer[i] fix; totality."""

import math
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import (
    REWARD_FUNCS,
    count_words,
    custom_numeric_reward_func,
    custom_reward_func,
    extract_xml_answer,
    get_reward_funcs,
    last_number,
    normalize_number,
)


def words(n: int, word: str = "x") -> str:
    return " ".join([word] * n)


def completion(reasoning=None, validate=None, answer=None) -> str:
    parts = []
    if reasoning is not None:
        parts.append(f"<reasoning>\n{reasoning}\n</reasoning>")
    if validate is not None:
        parts.append(f"<validate>\n{validate}\n</validate>")
    if answer is not None:
        parts.append(f"<answer>\n{answer}\n</answer>")
    return "\n".join(parts)


def score(text: str, gold: str = "72") -> float:
    return custom_reward_func(prompts=None, completions=[[{"role": "assistant", "content": text}]], answer=[gold])[0]


# --- each branch of the formula, values worked out by hand ------------------------------------------------


def test_no_tags_scores_zero():
    assert score("The answer is 72.") == 0.0


def test_correct_integer_answer_without_other_tags():
    assert score(completion(answer="72")) == 5.5


def test_wrong_integer_answer_gets_integer_bonus_only():
    assert score(completion(answer="7")) == 0.5


def test_wrong_non_integer_answer_scores_zero():
    assert score(completion(answer="3.5")) == 0.0


def test_correct_answer_that_is_not_digits():
    # "-5".isdigit() is False: correctness without the integer bonus.
    assert score(completion(answer="-5"), gold="-5") == 5.0


def test_answer_is_stripped_before_comparison():
    assert score("<answer>   72 \n</answer>") == 5.5


def test_full_format_correct_answer():
    text = completion(reasoning=words(10), validate=words(5), answer="72")
    # (5 + 0.5) * 1.25 * 1.25, reasoning (10-5)/1019*10, validate (5-5)/251*3 = 0
    assert score(text) == pytest.approx(5.5 * 1.25 * 1.25 + 50 / 1019)


def test_tag_multipliers_apply_to_answer_reward_only():
    text = completion(reasoning=words(3), validate=words(3), answer="7")
    assert score(text) == pytest.approx(0.5 * 1.25 * 1.25)


def test_reasoning_length_bounds():
    assert score(completion(reasoning=words(4))) == 0.0
    assert score(completion(reasoning=words(5))) == 0.0
    assert score(completion(reasoning=words(6))) == pytest.approx(10 / 1019)
    assert score(completion(reasoning=words(1023))) == pytest.approx(1018 / 1019 * 10)
    # The blog's odd bound: 1024 words and more fall back to 5.0, below the ~10 reached just before.
    assert score(completion(reasoning=words(1024))) == 5.0
    assert score(completion(reasoning=words(3000))) == 5.0


def test_validate_length_bounds():
    assert score(completion(validate=words(4))) == 0.0
    assert score(completion(validate=words(5))) == 0.0
    assert score(completion(validate=words(6))) == pytest.approx(3 / 251)
    assert score(completion(validate=words(255))) == pytest.approx(250 / 251 * 3)
    assert score(completion(validate=words(256))) == 3.0
    assert score(completion(validate=words(900))) == 3.0


def test_aha_multiplies_everything_by_ten():
    validate = "wait let me rethink this whole thing again"  # 8 words
    text = completion(reasoning=words(6), validate=validate, answer="72")
    base = 5.5 * 1.25 * 1.25 + 10 / 1019 + 3 * 3 / 251
    assert score(text) == pytest.approx(10 * base)


def test_aha_needs_twenty_characters_after_the_word():
    # One word each, so no length bonus: only the correct answer (5.5 x 1.25) is multiplied.
    assert score(completion(validate="wait", answer="72")) == 6.875
    assert score(completion(validate="wait" + "y" * 19, answer="72")) == 6.875
    assert score(completion(validate="wait" + "y" * 20, answer="72")) == 68.75
    assert score(completion(validate="rethink" + "y" * 20, answer="72")) == 68.75


def test_aha_matches_inside_words_and_any_case_like_the_blog():
    # "attribute" contains "but"; the blog's regex has no word boundary, and it lowercases first.
    assert score(completion(validate="ATTRIBUTE " + words(12))) == pytest.approx(10 * (8 * 3 / 251))


def test_tags_out_of_order_count_as_present_with_no_length():
    text = "</reasoning> one two three four five six seven <reasoning> <answer>72</answer>"
    assert score(text) == pytest.approx(5.5 * 1.25)


def test_unclosed_answer_tag_is_no_answer():
    assert score("<answer>72") == 0.0


def test_first_answer_tag_wins():
    assert score("<answer>7</answer><answer>72</answer>") == 0.5


def test_non_ascii_digits_get_the_integer_bonus_like_str_isdigit():
    assert score(completion(answer="٧٢")) == 0.5


# --- the answer[i] fix and input shapes ------------------------------------------------------------------


def test_each_completion_is_scored_against_its_own_answer():
    completions = [[{"role": "assistant", "content": completion(answer=a)}] for a in ("72", "18", "3")]
    assert custom_reward_func(prompts=None, completions=completions, answer=["72", "18", "4"]) == [5.5, 5.5, 0.5]


def test_plain_string_completions_score_like_conversational_ones():
    texts = [completion(reasoning=words(20), answer="72"), "nothing"]
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    assert custom_reward_func(None, texts, ["72", "72"]) == custom_reward_func(None, conversational, ["72", "72"])


def test_trl_extra_keyword_arguments_are_accepted():
    result = custom_reward_func(
        prompts=[[{"role": "user", "content": "q"}]],
        completions=[[{"role": "assistant", "content": "<answer>72</answer>"}]],
        answer=["72"],
        question=["q"],
        completion_ids=[[1, 2]],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
    )
    assert result == [5.5]


def test_mismatched_answer_count_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        custom_reward_func(None, ["a", "b"], ["1"])


def test_thousands_commas_exact_and_numeric():
    gold = "1,450,000"
    assert score(completion(answer="1,450,000"), gold) == 5.0  # correct, but not all digits
    assert score(completion(answer="1450000"), gold) == 0.5  # the blog's exact match misses it
    numeric = custom_numeric_reward_func(None, [completion(answer="1450000")], [gold])
    assert numeric == [5.5]


def test_negative_answers_numeric():
    assert custom_numeric_reward_func(None, [completion(answer="-5.0")], ["-5"]) == [5.0]


# --- single rules and the registry -----------------------------------------------------------------------


def test_single_rules():
    text = completion(reasoning=words(6), validate="wait let me rethink this whole thing again", answer="72")
    one = {name: REWARD_FUNCS[name](completions=[text], answer=["72"])[0] for name in REWARD_FUNCS}
    assert one["correctness"] == 5.0
    assert one["integer"] == 0.5
    assert one["reasoning_tags"] == 1.0
    assert one["validate_tags"] == 1.0
    assert one["reasoning_length"] == pytest.approx(10 / 1019)
    assert one["validate_length"] == pytest.approx(9 / 251)
    assert one["aha"] == 1.0
    empty = {name: REWARD_FUNCS[name](completions=[""], answer=["72"])[0] for name in REWARD_FUNCS}
    assert set(empty.values()) == {0.0}


def test_registry_resolves_every_name_and_rejects_unknown_ones():
    assert get_reward_funcs(list(REWARD_FUNCS)) == list(REWARD_FUNCS.values())
    assert get_reward_funcs(rewards.DEFAULT_REWARD_FUNCS) == [custom_reward_func]
    with pytest.raises(ValueError, match="unknown reward function.*'nope'.*choose from: custom"):
        get_reward_funcs(["custom", "nope"])
    with pytest.raises(ValueError, match="no reward function"):
        get_reward_funcs([])


def test_registry_functions_have_distinct_names_for_trl_logging():
    names = [f.__name__ for f in REWARD_FUNCS.values()]
    assert len(set(names)) == len(names)


# --- extraction helpers shared with the evaluator --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["<answer>1</answer>", "x<answer> a\nb </answer><answer>2</answer>", "<answer><answer>3</answer>",
     "</answer><answer>4</answer>", "<answer>5", "", "<answer></answer>", "<answer>\n\n</answer>x</answer>"],
)
def test_extract_matches_the_blogs_regex(text):
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    assert extract_xml_answer(text) == (match.group(1).strip() if match else "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("72", "72"), ("1,450,000", "1450000"), ("$18.00", "18"), ("18.", "18"), ("18.0", "18"), ("-5", "-5"),
     (" 3 000 ", "3000"), ("0.50", "0.5"), ("007", "7"), ("-0", "0"), ("abc", None), ("", None), (None, None),
     ("1e5", None), ("٣", None), ("1.2.3", None)],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("so 3 + 4 = 7.", "7"), ("total $1,234.50", "1234.5"), ("it is -12", "-12"), ("no numbers", None),
     ("<answer>18</answer> then 19", "19")],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


# --- word counts -----------------------------------------------------------------------------------------


needs_punkt = pytest.mark.skipif(not (SHARED / "nltk_data").is_dir(), reason="../shared/nltk_data not present")

SAMPLES = [
    "Natalia sold 48/2 = 24 clips in May. She sold 48+24 = 72 clips altogether. Wait, that's it!",
    "i think the answer is $1,234.50... but let's check: (3 * 4) = 12. mr. smith's dog isn't here.",
    'he said "no." then left.\n\nnew paragraph: 5 - 3 = 2. e.g. this one; u.s.a. too',
]


@needs_punkt
def test_counts_equal_nltk_word_tokenize_with_punkt_data():
    import nltk

    rewards._word_tokenizer.cache_clear()
    for text in SAMPLES:
        assert count_words(text) == len(nltk.word_tokenize(text))


@needs_punkt
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_capped_count_never_changes_the_bonus(text):
    import nltk

    exact = len(nltk.word_tokenize(text))
    assert exact >= len(text.split())  # what the cap shortcut relies on
    for cap in (3, 5, 8):
        assert min(count_words(text, cap=cap), cap) == min(exact, cap)
        assert count_words(text, cap=cap) in (cap, exact)



FRAGMENTS = st.sampled_from(
    ["<reasoning>", "</reasoning>", "<validate>", "</validate>", "<answer>", "</answer>", "72", "wait", "but",
     " rethink ", "Wait.", "\n", " ", ". ", "1,000", "-3", "x", "Mr. Smith", "٣", "\x00"]
)
TEXTS = st.lists(st.one_of(FRAGMENTS, st.text(max_size=40)), max_size=30).map("".join)


@needs_punkt
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXTS, min_size=1, max_size=4), st.sampled_from(["72", "-3", "1,000", ""]))
def test_equals_the_blogs_code_with_the_answer_fix(texts, gold):
    from blog_reward import blog_reward_func

    golds = [gold] * len(texts)
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    assert custom_reward_func(None, texts, golds) == pytest.approx(blog_reward_func(None, conversational, golds))


def test_offline_fallback_never_downloads_and_is_announced_once(tmp_path):
    script = (
        "import warnings, rewards\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    a = rewards.count_words('Hello there. General Kenobi! 3 + 4 = 7.')\n"
        "    b = rewards.count_words('two words')\n"
        "print(a, b, sum('punkt_tab' in str(w.message) for w in caught))\n"
    )
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    # Punkt would give: Hello there . General Kenobi ! 3 + 4 = 7 .  -> 12 tokens
    assert out.stdout.split() == ["12", "2", "1"]


# --- totality --------------------------------------------------------------------------------------------

ANY_CONTENT = st.one_of(st.none(), TEXTS, st.text(), st.integers())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_CONTENT, min_size=1, max_size=5), st.data())
def test_every_reward_is_total(contents, data):
    golds = data.draw(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=len(contents), max_size=len(contents)))
    completions = [[{"role": "assistant", "content": c}] for c in contents]
    for name, func in REWARD_FUNCS.items():
        values = func(prompts=None, completions=completions, answer=golds)
        assert len(values) == len(contents), name
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), name


def test_huge_and_pathological_completions_stay_fast_and_finite():
    huge = [
        "<answer>" * 100_000,
        "<reasoning>" + "wait " * 50_000 + "</reasoning><validate>" + "but " * 50_000 + "</validate>",
        "\x00" * 100_000 + "<answer>72</answer>",
        "<validate>" + "rethink" * 20_000,
    ]
    values = custom_reward_func(None, huge, ["72"] * len(huge))
    assert all(math.isfinite(v) for v in values)
    assert values[1] == pytest.approx(10 * (5.0 + 3.0))
    assert values[2] == 5.5


PROSE = st.lists(
    st.one_of(
        st.sampled_from(["Mr.", "e.g.", "isn't", "can't", '"quoted"', "“smart”", "(3)", "[x]", "--", "...", "$1,234.50",
                         "U.S.", "end.", "Wait!", "so?", "'tis", "a:b", "x;", "#5", "50%", "&", "<b>", "{y}", "—"]),
        st.text(max_size=12),
    ),
    max_size=60,
).map(" ".join)


@needs_punkt
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROSE)
def test_fast_tokenizer_gives_nltk_word_tokenize_tokens(text):
    import nltk

    assert rewards._word_tokenizer()(text) == nltk.word_tokenize(text)


# --- rewards of the user's own: path/to/file.py:function ---------------------------------------------------


def test_a_reward_file_with_a_syntax_error_names_the_file_line_and_message(tmp_path):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def ok(completions, **kwargs):\n    return [1.0] * len(completions)\n\ndef bad(:\n")
    with pytest.raises(ValueError) as error:
        rewards.get_reward_funcs([f"{reward_file}:ok"])
    message = str(error.value)
    assert f"{reward_file}, line 4: " in message and "invalid syntax" in message and "\n" not in message


def test_a_reward_file_that_fails_on_import_says_why(tmp_path):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("import no_such_module_here\n")
    with pytest.raises(ValueError, match=r"importing .*my_reward.py failed: ModuleNotFoundError: No module named"):
        rewards.get_reward_funcs([f"{reward_file}:fn"])


def test_train_reports_a_broken_reward_file_in_one_line(tmp_path):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def fn(completions, **kwargs)\n    return []\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--smoke", "--output_dir", str(tmp_path / "out"),
         "--reward_funcs", f"{reward_file}:fn"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: reward ") and f"{reward_file}, line 1: expected ':'" in last
    assert not (tmp_path / "out" / "base-model").exists()
