"""The reference blog's reward, written the blog's way, with one fix: completion i is compared with answer[i].

A test helper: the reference tests/test_rewards.py checks rewards.custom_reward_func against (the speed
comparison that also used it, bench/reward_speed.py, is in docs/BENCHMARKS.md). Per completion three lazy-regex
extractions and two nltk.word_tokenize calls, whether or not the tags are there, then the blog's formula and
control flow unchanged.
"""

import re

from nltk.tokenize import word_tokenize


def blog_extract_xml_answer(response: str, tag: str = "answer") -> str:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", response, re.DOTALL)
    if match:
        return match.group(1).strip()
    return ""


def blog_reward_func(prompts, completions, answer, **kwargs) -> list[float]:
    """The blog's custom_reward_func, formula and control flow unchanged, with answer[i] for answer[0]."""
    responses = [completion[0]["content"] for completion in completions]
    rewards_out = []
    for i, original_response in enumerate(responses):
        extracted_answer = blog_extract_xml_answer(original_response, tag="answer")
        extracted_reasoning = blog_extract_xml_answer(original_response, tag="reasoning")
        extracted_validate = blog_extract_xml_answer(original_response, tag="validate")
        is_correct = extracted_answer == answer[i]
        is_int = extracted_answer.isdigit()
        has_reasoning_tags = "<reasoning>" in original_response and "</reasoning>" in original_response
        has_validate_tags = "<validate>" in original_response and "</validate>" in original_response
        reasoning_length = len(word_tokenize(extracted_reasoning.lower()))
        validate_length = len(word_tokenize(extracted_validate.lower()))
        reward = 0.0
        reasoning_reward = 0.0
        if is_correct:
            reward += 5.0
        if is_int:
            reward += 0.5
        if has_validate_tags:
            reward *= 1.25
            if validate_length >= 5:
                if validate_length >= 256:
                    validate_bonus = 3.0
                else:
                    validate_bonus = ((validate_length - 5) / (256 - 5)) * 3.0
            else:
                validate_bonus = 0.0
        else:
            validate_bonus = 0.0
        if has_reasoning_tags:
            reward *= 1.25
            if reasoning_length >= 5:
                if reasoning_length <= 5:
                    reasoning_reward = 0.0
                elif reasoning_length >= 1024:
                    reasoning_reward = 5.0
                else:
                    reasoning_reward = ((reasoning_length - 5) / (1024 - 5)) * 10
            else:
                reasoning_reward = 0.0
        else:
            reasoning_reward = 0.0
        total_reward = reward + reasoning_reward + validate_bonus
        if has_validate_tags:
            validate_lower = extracted_validate.lower()
            if re.search(r"(wait|but|rethink)(?=.{20,})", validate_lower, re.DOTALL):
                total_reward *= 10.0
        rewards_out.append(total_reward)
    return rewards_out
