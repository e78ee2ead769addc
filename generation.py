"""Greedy generation for evaluate.py: the shared types, and batched transformers `generate`.

Both engines (this one and vllm_generation.py's) take chat messages (prompts.build_messages) and return one
`Completion` per prompt, in order: the text without the end-of-turn token, the number of completion tokens
(end-of-turn token included, padding excluded) and whether it was cut off at `max_new_tokens`. Decoding is
greedy with no repetition penalty on both: Qwen's generation_config.json asks for sampling and
repetition_penalty=1.05, which vLLM ignores when it is given explicit SamplingParams, so this path ignores it too.
It loads the model with attention.py's grouped-query attention, runs the prompts' shared prefix (the system
prompt) once and starts every batch from its KV cache, lets the rows that have stopped leave the batch every 16
new tokens, and by default batches as many prompts as roofline.py finds this device's decode worth
(docs/BENCHMARKS.md: "Generation on the transformers path" measures the attention, the prefix and the batch;
"The real-model demo", the rows that leave).
torch, transformers and peft are imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from dataclasses import dataclass
from typing import Any

from cpu_decode import can_pack, grouped_query_attention, packed_linears


@dataclass(frozen=True)
class ModelSource:
    """Where one evaluated model comes from."""

    label: str  # "base" or "tuned": the table row and the JSONL file name
    model: str  # folder or hub name of full weights
    tokenizer: str  # folder or hub name of the tokenizer
    adapter: str | None = None  # LoRA adapter folder applied on top of `model`


@dataclass
class Completion:
    """One generated answer."""

    text: str
    num_tokens: int  # completion tokens, end-of-turn token included, padding excluded
    cut_off: bool  # stopped by max_new_tokens rather than by the end-of-turn token
    token_ids: list[int]


def load_tokenizer(path: str) -> Any:
    """The tokenizer at `path`, padding on the left (transformers 5 does not save padding_side)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    # Left padding: every prompt ends right where generation starts, so a batch decodes like single prompts.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prompt_texts(tokenizer: Any, messages_list: list[list[dict[str, str]]]) -> list[str]:
    """The chat template applied to each conversation, ending with the assistant's generation prompt."""
    return [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages_list]


# ---------------------------------------------------------------------------------------------------------
# transformers: batches of similar prompt length, left padded


def free_memory() -> None:
    """Give back what a dropped model held (the GPU cache too)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_hf_model(source: ModelSource, attn_implementation: str | None = None) -> Any:
    """The model on the best device: bf16 on a GPU that supports it, else float32; an adapter is merged in.

    Attention: attention.py's grouped-query SDPA unless `attn_implementation` names another ("sdpa", "eager").
    """
    import torch
    from transformers import AutoModelForCausalLM

    from attention import register

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    attn_implementation = attn_implementation or register()
    model = AutoModelForCausalLM.from_pretrained(source.model, dtype=dtype, attn_implementation=attn_implementation)
    model = model.to(device)
    if source.adapter:
        from peft import PeftModel

        # Merged, the adapter costs nothing per token.
        model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
    return model.eval()


# Stands for an answer's text when the chat template is rendered to find what follows an answer.
TURN_MARKER = "ANSWER-TEXT-7f3a"


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template closes an assistant turn with (ChatML: <|im_end|>), else None.

    A tokenizer's eos is often another token (Qwen2.5's base model: <|endoftext|>), and a generation_config may
    list only that one: the turn's end must stop generation all the same.
    """
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": TURN_MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 -- no template, or one that refuses this conversation: nothing to add
        return None
    if TURN_MARKER not in text:
        return None
    ids = tokenizer(text.split(TURN_MARKER, 1)[1], add_special_tokens=False).input_ids
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return ids[0] if ids and ids[0] in added and added[ids[0]].special else None


def stop_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    """The ids that end an answer: the tokenizer's eos, the chat template's end of turn and the model's
    generation_config eos ids (Qwen: <|im_end|>, <|endoftext|>), as vLLM stops."""
    ids = [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    configured = model.generation_config.eos_token_id if model is not None else None
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


def to_completion(tokenizer: Any, new_ids: list[int], stop_ids: list[int]) -> Completion:
    """Cut generated ids at the first stop token (kept in the count); without one the limit cut it off.

    A row that has not stopped is never padded, so everything before the first stop token is real output.
    """
    stop_at = next((k for k, token in enumerate(new_ids) if token in stop_ids), None)
    kept = new_ids if stop_at is None else new_ids[: stop_at + 1]
    text_ids = kept if stop_at is None else kept[:-1]
    return Completion(tokenizer.decode(text_ids, skip_special_tokens=True), len(kept), stop_at is None, kept)


def generate_hf(
    source: ModelSource,
    messages_list: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int | None = None,
) -> list[Completion]:
    """Greedy completions with transformers, in order; prompts are batched longest first.

    `batch_size` None: roofline.decode_batch_size, from this device's measured limits and the model's size.
    """
    started = time.perf_counter()
    tokenizer = load_tokenizer(source.tokenizer)
    model = load_hf_model(source)
    if batch_size is None:
        from roofline import decode_batch_size, measure_limits

        limits = measure_limits(model.device, model.dtype)
        batch_size = decode_batch_size(model, limits, prompts=len(messages_list), context=512 + max_new_tokens)
        print(f"{source.label}: batch size {batch_size} ({limits.describe()})", file=sys.stderr, flush=True)
    loaded = time.perf_counter()
    completions = generate_with_model(model, tokenizer, messages_list, max_new_tokens, batch_size, label=source.label)
    print(speed_line(source.label, completions, loaded - started, time.perf_counter() - loaded), file=sys.stderr, flush=True)
    del model
    free_memory()
    return completions


def speed_line(label: str, completions: list[Completion], start_seconds: float, generate_seconds: float) -> str:
    """One line of what a generation took: '<label>: N tokens in S s (R tokens/s), after L s loading'."""
    tokens = sum(c.num_tokens for c in completions)
    rate = tokens / generate_seconds if generate_seconds > 0 else float("inf")
    return f"{label}: {tokens} tokens in {generate_seconds:.1f} s ({rate:.1f} tokens/s), after {start_seconds:.1f} s loading"


# Rows that have stopped leave a batch this often (in new tokens). SmolLM2's 200 miniature test problems at 100
# rows, 128 new tokens: 1.1-1.4x faster than one generate call; 8 and 32 within noise of 16 (docs/BENCHMARKS.md).
STOP_CHECK_TOKENS = 16

# A shared prefix shorter than this is not worth a separate forward pass and a cache copy per batch.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix all `rows` start with, leaving every row at least one token of its own."""
    first = rows[0]
    length = min(len(row) for row in rows) - 1
    for row in rows[1:]:
        length = next((k for k in range(length) if row[k] != first[k]), length)
    return max(length, 0)


def generate_with_model(
    model: Any,
    tokenizer: Any,
    messages_list: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int,
    label: str = "generate",
    share_prefix: bool = True,
    pack: bool = True,
    stop_check_every: int = STOP_CHECK_TOKENS,
) -> list[Completion]:
    """generate_hf's greedy loop on a model and tokenizer already loaded (bench/gpu_bench.py times it).

    `tokenizer` must pad on the left (load_tokenizer's); `model.generation_config` is replaced by the greedy one.
    With `share_prefix`, the token prefix every prompt starts with (the chat template's system prompt) is run
    through the model once, and each batch starts from a copy of its KV cache: each row is then
    prefix + padding + its own tokens, the padding masked out and the positions counted from the attention mask,
    so every row attends to exactly the tokens and positions it would alone. With `pack`, on the CPU, the weights are
    packed for oneDNN and attention groups its query heads in SDPA while it runs (cpu_decode.py): the same greedy
    tokens, faster. Every `stop_check_every` new tokens, the rows that have stopped leave the batch
    (_generate_dropping_stopped).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if tokenizer.padding_side != "left" or tokenizer.pad_token is None:  # right padding splits prompt and answer
        raise ValueError("generate_with_model needs a left-padding tokenizer with a pad token (load_tokenizer)")
    stop_ids = stop_token_ids(tokenizer, model)
    # Replaced, not passed to generate(): generate() fills every unset field from the model's own config,
    # which would bring back Qwen's repetition_penalty=1.05 and sampling settings.
    model.generation_config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
    )
    texts = prompt_texts(tokenizer, messages_list)
    # The chat template already holds every special token the model expects: add none.
    token_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    # Longest first: similar lengths share a batch (little padding) and an out-of-memory shows up at once.
    order = sorted(range(len(texts)), key=lambda i: -len(token_ids[i]))
    completions: list[Completion | None] = [None] * len(texts)
    fast = pack and can_pack(model)
    packed = packed_linears(model, batch_size) if fast else contextlib.nullcontext()
    grouped = grouped_query_attention() if fast else contextlib.nullcontext()
    with torch.inference_mode(), packed, grouped, tqdm(total=len(texts), desc=label, unit="problem") as bar:
        prefix = _prefix_cache(model, token_ids) if share_prefix else None
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs, cache = _batch_inputs(tokenizer, [token_ids[i] for i in batch], prefix, model.device)
            rows = _generate_dropping_stopped(model, inputs, cache, stop_ids, max_new_tokens, stop_check_every)
            for i, row in zip(batch, rows):
                completions[i] = to_completion(tokenizer, row, stop_ids)
            bar.update(len(batch))
    return completions  # type: ignore[return-value]


def _generate_dropping_stopped(
    model: Any, inputs: dict[str, Any], cache: Any, stop_ids: list[int], max_new_tokens: int, every: int
) -> list[list[int]]:
    """Each row's new token ids (padding after a stop token included), generated `every` tokens at a time.

    One generate call runs until its longest row stops: a batch whose answers are 70 tokens but one of 128 decodes
    every row for 128 steps. Between calls, the rows that have stopped leave the batch, cache and mask included,
    and the rest go on from their cache as one call would have (the same greedy tokens: tests/test_generation.py).
    """
    import torch
    from transformers import DynamicCache

    input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
    cache = cache if cache is not None else DynamicCache(config=model.config)
    stops = torch.tensor(stop_ids, device=input_ids.device)
    live = list(range(len(input_ids)))
    new_ids: list[list[int]] = [[] for _ in live]
    done = 0
    while True:
        step = min(max(every, 1), max_new_tokens - done)
        output = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache, max_new_tokens=step)
        new = output[:, input_ids.shape[1] :]
        for row, ids in zip(live, new.tolist()):
            new_ids[row] += ids
        done += step
        going = (~torch.isin(new, stops).any(dim=1)).nonzero().flatten()
        if len(going) == 0 or done >= max_new_tokens:
            break
        if len(going) < len(live):
            cache.batch_select_indices(going)
        live = [live[k] for k in going.tolist()]
        # The kept rows stopped nowhere: each new token is real, and unmasked.
        input_ids, mask = output[going], torch.cat([mask, torch.ones_like(new)], dim=1)[going]
    return new_ids


def _prefix_cache(model: Any, token_ids: list[list[int]]) -> tuple[list[int], Any] | None:
    """The shared prefix's ids and its KV cache (batch 1), or None when the prompts share too little."""
    import torch
    from transformers import DynamicCache

    length = shared_prefix_length(token_ids)
    if length < MIN_SHARED_PREFIX:
        return None
    prefix = token_ids[0][:length]
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix], device=model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return prefix, cache


def _batch_inputs(
    tokenizer: Any, rows: list[list[int]], prefix: tuple[list[int], Any] | None, device: Any
) -> tuple[dict[str, Any], Any]:
    """generate()'s input_ids and attention_mask for `rows`, and the cache to start from (None: an empty one).

    Without a prefix: left padding. With one: prefix, then padding, then each row's own tokens; the batch
    starts from a copy of the prefix cache repeated once per row.
    """
    import copy

    import torch

    prefix_ids, prefix_cache = prefix if prefix is not None else ([], None)
    own = [row[len(prefix_ids) :] for row in rows]
    width = max(len(tokens) for tokens in own)
    pad = tokenizer.pad_token_id
    input_ids = [prefix_ids + [pad] * (width - len(tokens)) + tokens for tokens in own]
    mask = [[1] * len(prefix_ids) + [0] * (width - len(tokens)) + [1] * len(tokens) for tokens in own]
    inputs = {"input_ids": torch.tensor(input_ids, device=device), "attention_mask": torch.tensor(mask, device=device)}
    if prefix_cache is None:
        return inputs, None
    cache = copy.deepcopy(prefix_cache)  # generate() extends the cache it is given
    cache.batch_repeat_interleave(len(rows))
    return inputs, cache
