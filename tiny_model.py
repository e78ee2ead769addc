"""A tiny random-weight Qwen2 model with a home-made ChatML tokenizer, built offline in about a second.

It is what `train.py --smoke`, `evaluate.py --smoke`, the tests and the CPU benchmarks run on: the real
code paths at toy size, with no download. The shipped GSM8K-format problems live in samples/gsm8k/ (data.SAMPLE_DATA_DIR).
`family="llama"` builds the same at SmolLM2-135M-Instruct's proportions instead (Llama, pad = eos).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prompts import SYSTEM_PROMPT
from data import SAMPLE_DATA_DIR
from run_metrics import read_jsonl

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split, so tokens look like the real model's (numbers one digit at a time).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-0.5B-Instruct's shape; the tiny default keeps its proportions (GQA, tied embeddings).
QWEN25_05B_SHAPE = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
    vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
)
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    tie_word_embeddings=True, max_position_embeddings=2048,
    # Qwen's 0.02 would cap a 64-wide model's logits near +-1.3 (uniform-looking output, nothing to learn);
    # 0.1 gives the tiny model's token preferences room to move under GRPO.
    initializer_range=0.1,
)
# SmolLM2-135M-Instruct's proportions (3 query heads per KV head, tied embeddings, its rope base and norm eps) at
# head size 64, the smallest vLLM's CPU attention takes, so that one tiny Llama serves both engines.
TINY_LLAMA_SHAPE = dict(
    hidden_size=192, intermediate_size=512, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
    tie_word_embeddings=True, max_position_embeddings=2048, rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, initializer_range=0.1,
)


@dataclass(frozen=True)
class Family:
    """What differs between the tiny models: transformers classes, default shape, special tokens."""

    config_class: str
    model_class: str
    shape: dict
    pad_token: str
    bos_token: str | None = None


FAMILIES = {
    "qwen2": Family("Qwen2Config", "Qwen2ForCausalLM", TINY_SHAPE, "<|endoftext|>"),
    # SmolLM2 pads with its eos: a padded row's padding is the very token that ends an answer.
    "llama": Family("LlamaConfig", "LlamaForCausalLM", TINY_LLAMA_SHAPE, "<|im_end|>", bos_token="<|im_start|>"),
}


def _tokenizer_corpus() -> list[str]:
    texts = [SYSTEM_PROMPT, "<reasoning> </reasoning> <validate> </validate> <answer> </answer> wait but rethink"]
    for path in sorted(SAMPLE_DATA_DIR.glob("*.jsonl")):
        for row in read_jsonl(path)[0]:
            texts += [row["question"], row["answer"]]
    texts.append(" ".join(str(i) for i in range(10)) + " + - * / = $ , . ? ! ( ) %")
    return texts


def build_tiny_tokenizer(vocab_size: int = 512, texts: Iterable[str] | None = None, family: str = "qwen2"):
    """A byte-level BPE tokenizer with ChatML special tokens, trained on `texts` (default: the prompt and samples);
    pad and bos as `family`'s real model has them."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tokenizer_corpus() if texts is None else texts, trainer=trainer)
    bos = FAMILIES[family].bos_token
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token=FAMILIES[family].pad_token,
        **({"bos_token": bos} if bos else {}),  # none named: the Qwen2 tokenizer files stay as they were
        chat_template=CHATML_TEMPLATE,
        model_max_length=32768,
    )


def build_causal_lm(tokenizer, shape: dict | None = None, seed: int = 0, dtype=None, family: str = "qwen2"):
    """A randomly initialised causal LM of `family` ("qwen2", "llama") and the given shape (default: the family's
    tiny one), sized to the tokenizer, with the tokenizer's special tokens."""
    import torch
    import transformers

    spec = FAMILIES[family]
    shape = dict(shape or spec.shape)
    shape.setdefault("vocab_size", len(tokenizer))
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    config = getattr(transformers, spec.config_class)(
        **shape,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, spec.model_class)(config)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_qwen2_model(tokenizer, shape: dict | None = None, seed: int = 0, dtype=None):
    """A randomly initialised Qwen2ForCausalLM of the given shape (default: tiny), sized to the tokenizer."""
    return build_causal_lm(tokenizer, shape, seed, dtype)


def build_tiny_model(output_dir: str | Path, seed: int = 0, family: str = "qwen2") -> Path:
    """Write a tiny random `family` model and its tokenizer to `output_dir` (loadable by from_pretrained)."""
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and (output_dir / "tokenizer.json").exists():
        return output_dir
    tokenizer = build_tiny_tokenizer(family=family)
    model = build_causal_lm(tokenizer, seed=seed, family=family)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
