"""llama.cpp's own reading of a GGUF file, in a process of its own (a C++ exception in llama.cpp aborts the whole
process): `python tests/llama_cpp_probe.py FILE.gguf PROMPTS.json MAX_NEW_TOKENS` prints, as JSON, llama.cpp's
ids for each prompt text, its greedy answer ids (the end-of-generation token included when reached), the ids it
ends generation at, and the file's metadata."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gguf_chat import GgufChat  # noqa: E402


def main() -> None:
    path, prompts, max_new_tokens = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3])
    chat = GgufChat(path)
    tokens = [chat.tokenize(text) for text in prompts]
    greedy = [list(chat.generate(ids, max_new_tokens)) if max_new_tokens else [] for ids in tokens]
    eog = [token for token in range(chat.llm.n_vocab()) if chat.is_end(token)]
    print(json.dumps({"tokens": tokens, "greedy": greedy, "eog": eog, "metadata": chat.llm.metadata}))


if __name__ == "__main__":
    main()
