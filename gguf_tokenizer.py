"""A transformers tokenizer as llama.cpp reads one from a GGUF file, and its chat template as Ollama's.

export_gguf.py writes what this module works out, all of it before any weight is loaded:
- the vocabulary as llama.cpp's `gpt2` (byte-level BPE) kind: every token's text, its type (normal, control for
  special tokens, user-defined for other added tokens, unused for embedding rows no token names), the merges;
- the pre-tokenizer's name, read from the tokenizer's own structure: llama.cpp splits text with a fixed rule per
  name, so a structure that none of the known names reproduces is refused, never written under a near miss;
- the special tokens, eos being the chat template's end of turn (`<|im_end|>` for ChatML): what a model tuned on
  its chat template ends an answer with, whatever eos the tokenizer was saved with;
- an Ollama TEMPLATE (Go template syntax) that writes, for a conversation with a system prompt, exactly the text
  the Jinja chat template writes, checked by rendering both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# llama.cpp's pre-tokenizer names for the splits transformers' tokenizers spell as below (src/llama-vocab.cpp
# holds llama.cpp's regexes for each name).
GPT2_NAME, SMOLLM_NAME, QWEN2_NAME = "gpt-2", "smollm", "qwen2"
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# gguf.TokenType values, spelled out so that `import gguf_tokenizer` stays light.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
# Stand-ins for message contents when the chat template is rendered to find its pieces.
MARKERS = {"system": "SYSTEM-7f3a", "user": "USER-7f3a", "assistant": "ASSISTANT-7f3a", "user2": "USER2-7f3a"}


class TokenizerError(ValueError):
    """A tokenizer or chat template that cannot be written for llama.cpp or Ollama (one line)."""


@dataclass
class GgufVocab:
    """Everything about the tokenizer that goes into the GGUF file and the Modelfile."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]  # bos, eos, unk, pad, eot: the GGUF keys' names
    add_bos: bool
    chat_template: str
    end_of_turn: str
    stop_tokens: list[str]
    ollama_template: str
    notes: list[str] = field(default_factory=list)


def pre_tokenizer_name(backend: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's split (`backend`: tokenizer.json as a dict); a TokenizerError if none
    reproduces it."""
    pre = backend.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [part.get("type") for part in parts]
    byte_level = parts[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return GPT2_NAME
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level.get("use_regex", True):
            return SMOLLM_NAME
        if (
            kinds == ["Split", "ByteLevel"]
            and parts[0].get("pattern", {}).get("Regex") == QWEN2_SPLIT
            and parts[0].get("behavior") == "Isolated"
            and not byte_level.get("use_regex", True)
        ):
            return QWEN2_NAME
    raise TokenizerError(
        f"its pre-tokenizer ({json.dumps(pre)[:160]}) is none llama.cpp splits the same way "
        f"({GPT2_NAME}, {SMOLLM_NAME}, {QWEN2_NAME} are)"
    )


def check_model(backend: dict[str, Any]) -> None:
    """A byte-level BPE model that llama.cpp's `gpt2` vocabulary runs as transformers does, or a TokenizerError."""
    model = backend.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"a {model.get('type')} tokenizer; only byte-level BPE tokenizers are exported")
    if model.get("ignore_merges") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError("a BPE tokenizer with ignore_merges or subword affixes, which llama.cpp's gpt2 kind lacks")
    normalizer = backend.get("normalizer") or {}
    # NFC is Qwen2's: llama.cpp skips it, which changes nothing on text that is already NFC (nearly all text).
    if normalizer.get("type") not in (None, "NFC") and normalizer != {"type": "Sequence", "normalizers": []}:
        raise TokenizerError(f"its normalizer {normalizer.get('type')} has no counterpart in llama.cpp")


def render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    """The chat template's text for `messages`, as transformers renders it."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def end_of_turn(tokenizer: Any) -> str:
    """The special token the chat template closes an assistant turn with (`<|im_end|>` for ChatML); the
    tokenizer's eos when the template closes it with none."""
    from generation import end_of_turn_id

    turn_end = end_of_turn_id(tokenizer)
    if turn_end is None and tokenizer.eos_token is None:
        raise TokenizerError("neither its chat template nor its eos token marks the end of an answer")
    return tokenizer.eos_token if turn_end is None else tokenizer.convert_ids_to_tokens(turn_end)


def ollama_template(tokenizer: Any, turn_end: str) -> str:
    """The chat template as an Ollama TEMPLATE (Go template syntax), checked against the Jinja rendering.

    Each message is rendered as a role header, the content, and a footer (the end-of-turn token and the line
    break after it); what comes before the system message's header is written before everything.
    """
    m = MARKERS
    conversation = [
        {"role": "system", "content": m["system"]}, {"role": "user", "content": m["user"]},
        {"role": "assistant", "content": m["assistant"]}, {"role": "user", "content": m["user2"]},
    ]  # fmt: skip
    text = render(tokenizer, conversation, True)
    cuts = [text.find(m[key]) for key in ("system", "user", "assistant", "user2")]
    if -1 in cuts or cuts != sorted(cuts):
        raise TokenizerError("its chat template does not write the system, user and assistant messages in order")
    ends = [cut + len(m[key]) for cut, key in zip(cuts, ("system", "user", "assistant", "user2"))]
    before_system, system_user, user_assistant, assistant_user, tail = (
        text[: cuts[0]], text[ends[0] : cuts[1]], text[ends[1] : cuts[2]], text[ends[2] : cuts[3]], text[ends[3] :],
    )  # fmt: skip
    if not assistant_user.startswith(turn_end):
        raise TokenizerError(f"its chat template does not close an assistant message with {turn_end!r}")
    after_end = assistant_user[len(turn_end) :]
    footer = turn_end + after_end[: len(after_end) - len(after_end.lstrip(" \n"))]
    pieces = [system_user, user_assistant, assistant_user, tail]
    if not all(piece.startswith(footer) for piece in pieces):
        raise TokenizerError("its chat template does not end every message the same way, as Ollama's template must")
    user_header, assistant_header = assistant_user[len(footer) :], user_assistant[len(footer) :]
    generation = tail[len(footer) :]
    system_header = user_header.replace("user", "system")
    start = before_system[: -len(system_header)] if before_system.endswith(system_header) else ""
    system_header = before_system[len(start) :]
    if system_user[len(footer) :] != user_header:
        raise TokenizerError("its chat template writes the first user message unlike the later ones")
    template = (
        f'{start}{{{{ if .System }}}}{system_header}{{{{ .System }}}}{footer}{{{{ end }}}}'
        f'{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{user_header}{{{{ .Content }}}}{footer}'
        f'{{{{ else if eq .Role "assistant" }}}}{assistant_header}{{{{ .Content }}}}{footer}{{{{ end }}}}{{{{ end }}}}'
        f"{generation}"
    )
    pieces = [start, system_header, footer, user_header, assistant_header, generation]
    if any("{{" in piece or '"""' in piece for piece in pieces):
        raise TokenizerError("its chat template's text holds '{{' or '\"\"\"', which a Modelfile cannot quote")
    # The Go template filled in as Ollama fills it, for a one-question chat, against the Jinja rendering.
    filled = f"{start}{system_header}S{footer}{user_header}Q{footer}{generation}"
    expected = render(tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], True)
    if filled != expected:
        raise TokenizerError(f"Ollama's template would write {filled!r} where the chat template writes {expected!r}")
    return template


def gguf_vocab(tokenizer: Any, vocab_size: int) -> GgufVocab:
    """The GGUF vocabulary of a transformers fast tokenizer for a model with `vocab_size` embedding rows."""
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError("not a fast (tokenizer.json) tokenizer")
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    check_model(backend)
    pre = pre_tokenizer_name(backend)
    if not isinstance(tokenizer.chat_template, str) or not tokenizer.chat_template:
        raise TokenizerError("no chat template: llama.cpp and Ollama would not know how to write a prompt")
    size = len(tokenizer)
    if size > vocab_size:
        raise TokenizerError(f"{size} tokens for a model with {vocab_size} embedding rows")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {index: token for index, token in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for index in range(vocab_size):
        if index in added:
            tokens.append(added[index].content)
            types.append(CONTROL if added[index].special else USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(NORMAL)
        else:  # embedding rows past the tokenizer (padding to a round size)
            tokens.append(f"[PAD{index}]")
            types.append(UNUSED)
    turn_end = end_of_turn(tokenizer)
    eos = tokenizer.convert_tokens_to_ids(turn_end)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = {"bos": tokenizer.bos_token_id, "eos": eos, "unk": tokenizer.unk_token_id, "pad": pad}
    notes = []
    if tokenizer.eos_token and tokenizer.eos_token != turn_end:
        ids["eot"] = ids["eos"]
        notes.append(f"eos: the chat template's end of turn {turn_end!r} (the tokenizer's eos: {tokenizer.eos_token!r})")
    probe = tokenizer("a").input_ids
    add_bos = tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id
    stops = [turn_end] + ([tokenizer.eos_token] if tokenizer.eos_token and tokenizer.eos_token != turn_end else [])
    return GgufVocab(
        tokens=tokens, token_types=types, merges=merges_of(backend), pre=pre,
        special_ids={key: value for key, value in ids.items() if value is not None}, add_bos=add_bos,
        chat_template=tokenizer.chat_template, end_of_turn=turn_end, stop_tokens=stops,
        ollama_template=ollama_template(tokenizer, turn_end), notes=notes,
    )  # fmt: skip


def merges_of(backend: dict[str, Any]) -> list[str]:
    """The BPE merges as GGUF stores them: 'left right'."""
    merges = backend["model"].get("merges") or []
    if merges and isinstance(merges[0], str):
        return list(merges)
    # tokenizers' newer pair form may hold a space inside a part, which GGUF's 'a b' form cannot: written as 'Ġ'
    # (U+0120), byte-level BPE's own spelling of a space.
    return [" ".join(part.replace(" ", chr(ord(" ") + 256)) for part in pair) for pair in merges]


def modelfile(gguf_name: str, vocab: GgufVocab, system_prompt: str) -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` beside it: template, stop tokens, system prompt, greedy."""
    stops = "".join(f"PARAMETER stop {json.dumps(token)}\n" for token in vocab.stop_tokens)
    return (
        f"# ollama create NAME -f Modelfile && ollama run NAME   (written by export_gguf.py)\n"
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{vocab.ollama_template}"""\n'
        f'SYSTEM """{system_prompt}"""\n'
        f"{stops}"
        "# greedy, as evaluate.py scores the model; raise it for varied answers\n"
        "PARAMETER temperature 0\n"
    )
