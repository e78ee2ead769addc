"""The prompt the model is trained and evaluated with.

Training (train.py) and evaluation (evaluate.py) both build their chat messages here, so the model is
always scored on exactly the prompt it learned from.
"""

# Verbatim from the reference blog post, typo ("somethin") and leading newline included: the published
# accuracy figures were measured with this exact text.
SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
[Break and reason your answer here]
</reasoning>
<validate>
[Criticize your reason and think about it. If you see somethin start with 'wait']
</validate>
<answer>
[Final integer answer justified by validate]
</answer>
"""


def build_messages(question: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Return the chat messages (system prompt, then the question as the user turn) for one problem."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
    ]
