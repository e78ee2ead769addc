"""A GGUF file's answers through llama.cpp (llama-cpp-python): what llama.cpp, Ollama or LM Studio will say.

ask.py puts its question to a `.gguf` checkpoint through this module: the prompt is the training prompt in the
file's own chat template (rendered as transformers renders templates), tokenized by llama.cpp with its special
tokens, and decoded greedily (or sampled at --temperature) until a token llama.cpp counts as the end of
generation. `import gguf_chat` loads neither llama.cpp nor transformers; `gguf_problem` reads only the header.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator

GGUF_MAGIC = b"GGUF"
CONTEXT_TOKENS = 4096  # the prompt (~170 tokens) and a full answer (ask.py's 512) fit many times over


def gguf_problem(path: str | Path) -> str | None:
    """Why `path` is not a GGUF file llama.cpp can chat with (missing, not GGUF, no chat template); None if fine.

    Reads the header with PyPI's gguf package: a bad file is found here, not by llama.cpp, which aborts the
    whole process on some malformed files.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        return "no such file"
    with open(file, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            return "not a GGUF file (it does not start with the GGUF magic bytes)"
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(file)).fields
    except Exception as error:  # noqa: BLE001 -- gguf raises ValueError, struct and numpy errors on a bad file
        return f"not a readable GGUF file ({type(error).__name__}: {error})"
    if "tokenizer.chat_template" not in fields:
        return "holds no chat template (tokenizer.chat_template), so no prompt can be written for it"
    return None


def default_threads() -> int:
    """One thread per core, less one when there are several: llama.cpp's threads wait for each other at every
    step, so a core taken by something else stalls all of them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


class GgufChat:
    """One GGUF model loaded in llama.cpp, answering chat messages with `max_new_tokens` at `temperature`."""

    def __init__(
        self, path: str | Path, max_new_tokens: int = 512, temperature: float = 0.0, threads: int | None = None
    ):
        import llama_cpp

        self.path, self.max_new_tokens, self.temperature = str(path), max_new_tokens, temperature
        self._lib = llama_cpp
        threads = threads or default_threads()
        # The prompt's threads too: llama-cpp-python would give it every core, and a busy one stalls the others.
        self.llm = llama_cpp.Llama(
            model_path=self.path, n_ctx=CONTEXT_TOKENS, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        vocab = self.llm._model
        self.special_text = {
            "bos_token": vocab.token_get_text(vocab.token_bos()) if vocab.token_bos() >= 0 else "",
            "eos_token": vocab.token_get_text(vocab.token_eos()) if vocab.token_eos() >= 0 else "",
        }

    def prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat prompt for `messages` in the file's own chat template, ready for the answer."""
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[messages], chat_template=self.template, add_generation_prompt=True, **self.special_text
        )
        return rendered[0]

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's ids for `text`, special tokens read as such, nothing added (the template holds them all)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def is_end(self, token: int) -> bool:
        """Whether llama.cpp ends generation at `token` (eos, end of turn, and the like)."""
        return bool(self._lib.llama_vocab_is_eog(self.llm._model.vocab, token))

    def generate(self, ids: list[int], max_new_tokens: int, temperature: float = 0.0) -> Iterator[int]:
        """New token ids after `ids`, up to `max_new_tokens`, the end-of-generation token included when reached.

        Greedy at temperature 0; above it, plain sampling at that temperature (top-k 50, as transformers' default).
        A prompt that starts like the previous one reuses its cached prefix.
        """
        sampling = {"temp": 0.0, "top_k": 1} if temperature <= 0 else {"temp": temperature, "top_k": 50}
        count = 0
        for token in self.llm.generate(ids, top_p=1.0, min_p=0.0, repeat_penalty=1.0, **sampling):
            count += 1
            yield token
            if self.is_end(token) or count >= max_new_tokens:
                return

    def text(self, ids: list[int]) -> str:
        """The text of `ids`, special tokens left out."""
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def stream_answer(self, messages: list[dict[str, str]]) -> str:
        """Answer `messages`, printing the answer as it comes; return its text (without the end token)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        answer = []
        for token in self.generate(self.tokenize(self.prompt(messages)), self.max_new_tokens, self.temperature):
            if self.is_end(token):
                break
            answer.append(token)
            print(decoder.decode(self.llm.detokenize([token])), end="", flush=True)
        print(decoder.decode(b"", final=True), flush=True)
        return self.text(answer)

