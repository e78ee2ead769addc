"""generation.py's shared-prefix batches and roofline.py's batch size: the same tokens, a batch from the limits."""

import pytest
from helpers import build_wide_tiny_model

from data import SAMPLE_DATA_DIR, get_gsm8k_questions
from generation import (
    MIN_SHARED_PREFIX,
    ModelSource,
    generate_hf,
    generate_with_model,
    load_hf_model,
    load_tokenizer,
    prompt_texts,
    shared_prefix_length,
)
from roofline import MAX_BATCH, DeviceLimits, decode_batch_size, ridge_batch

SAMPLES = str(SAMPLE_DATA_DIR)
CPU = DeviceLimits("cpu, 2 threads", "float32", bandwidth=27.9e9, flops=263e9)  # this project's 2-core VM


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]], 2),
        ([[1, 2, 3], [1, 2, 3]], 2),  # every row keeps one token of its own for generate() to start from
        ([[1, 2, 3]], 2),
        ([[7, 2], [1, 2]], 0),
    ],
)
def test_shared_prefix_length(rows, expected):
    assert shared_prefix_length(rows) == expected


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def tiny(request, tmp_path_factory):
    """smoke's tiny model, then the tiny Llama (padding with its eos), with wide random weights, so that every
    prompt gets its own completion."""
    return build_wide_tiny_model(tmp_path_factory.mktemp(request.param) / "model", family=request.param)


@pytest.mark.slow
# None: generation's default, attention.GQA_SDPA; the Llama with that one only (transformers' sdpa is not ours).
@pytest.mark.parametrize(
    ("tiny", "attn_implementation"), [("qwen2", "sdpa"), ("qwen2", None), ("llama", None)], indirect=["tiny"]
)
def test_a_shared_prefix_gives_the_same_tokens(tiny, attn_implementation):
    prompts = get_gsm8k_questions(split="train", dataset_name=SAMPLES)["prompt"]
    tokenizer = load_tokenizer(str(tiny))
    rows = [tokenizer(t, add_special_tokens=False).input_ids for t in prompt_texts(tokenizer, prompts)]
    assert shared_prefix_length(rows) >= MIN_SHARED_PREFIX  # the system prompt: the path under test runs
    model = load_hf_model(ModelSource("base", str(tiny), str(tiny)), attn_implementation)
    plain = generate_with_model(model, tokenizer, prompts, 8, batch_size=1, share_prefix=False)
    for batch_size in (1, 5):  # 5: padded rows, and a last batch of 1
        shared = generate_with_model(model, tokenizer, prompts, 8, batch_size=batch_size, share_prefix=True)
        assert [c.token_ids for c in shared] == [c.token_ids for c in plain]
    assert len({tuple(c.token_ids) for c in plain}) > 1


@pytest.mark.slow
@pytest.mark.parametrize("tiny", ["llama"], indirect=True)
def test_rows_padded_with_eos_still_stop_at_eos(tiny):
    """The tiny Llama pads with its eos: on the left of short prompts and after rows that have stopped."""
    prompts = get_gsm8k_questions(split="train", dataset_name=SAMPLES)["prompt"]
    tokenizer = load_tokenizer(str(tiny))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    model = load_hf_model(ModelSource("base", str(tiny), str(tiny)))
    alone = generate_with_model(model, tokenizer, prompts, 8, batch_size=1, share_prefix=False)
    batched = generate_with_model(model, tokenizer, prompts, 8, batch_size=len(prompts), share_prefix=False)
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    stopped = [c for c in batched if not c.cut_off]
    assert stopped  # these weights answer at least one prompt with an early eos
    for c in stopped:
        assert c.token_ids.index(tokenizer.eos_token_id) == c.num_tokens - 1 == len(c.token_ids) - 1
        assert c.num_tokens < 8 and tokenizer.eos_token not in c.text


@pytest.mark.slow
@pytest.mark.parametrize("tiny", ["llama"], indirect=True)
def test_rows_that_stopped_leave_the_batch(tiny):
    """A batch decodes only the rows still answering once they have been checked, with the same greedy tokens."""
    prompts = get_gsm8k_questions(split="train", dataset_name=SAMPLES)["prompt"]
    tokenizer = load_tokenizer(str(tiny))
    model = load_hf_model(ModelSource("base", str(tiny), str(tiny)))
    decoding_rows: list[int] = []  # the batch of every one-token forward call

    def count_rows(module, args, kwargs):
        if kwargs["input_ids"].shape[1] == 1:
            decoding_rows.append(kwargs["input_ids"].shape[0])

    hook = model.register_forward_pre_hook(count_rows, with_kwargs=True)
    one_call = generate_with_model(model, tokenizer, prompts, 8, batch_size=len(prompts), stop_check_every=8)
    assert set(decoding_rows) == {len(prompts)}
    assert any(not c.cut_off and c.num_tokens <= 6 for c in one_call)  # a row stopped before the last check below
    decoding_rows.clear()
    checked = generate_with_model(model, tokenizer, prompts, 8, batch_size=len(prompts), stop_check_every=2)
    hook.remove()
    assert [c.token_ids for c in checked] == [c.token_ids for c in one_call]
    assert decoding_rows[0] == len(prompts) and min(decoding_rows) < len(prompts)


@pytest.mark.slow
def test_generate_hf_chooses_a_batch_when_none_is_given(tiny, capsys):
    prompts = get_gsm8k_questions(split="test", dataset_name=SAMPLES)["prompt"]
    source = ModelSource("base", str(tiny), str(tiny))
    chosen = generate_hf(source, prompts, max_new_tokens=4)
    assert "base: batch size" in capsys.readouterr().err  # stdout is evaluate.py's table
    assert [c.token_ids for c in chosen] == [c.token_ids for c in generate_hf(source, prompts, 4, batch_size=1)]


def test_ridge_batch_is_where_compute_time_meets_weight_reads():
    # float32 on the 2-core VM: 4 bytes x 263 GFLOP/s / (2 x 27.9 GB/s) = 18.9
    assert ridge_batch(4, CPU) == pytest.approx(18.85, abs=0.01)


class FakeDevice:
    type = "cpu"


class Sized:
    """What decode_batch_size reads from a model: one parameter's element size and the device."""

    device = FakeDevice()

    def __init__(self, element_size):
        self._element_size = element_size

    def parameters(self):
        import torch

        yield torch.zeros(1, dtype={4: torch.float32, 2: torch.bfloat16}[self._element_size])


@pytest.mark.parametrize(
    ("limits", "element_size", "prompts", "expected"),
    [
        (CPU, 4, None, 32),  # the ridge (18.9) rounded up to a power of two
        (CPU, 4, 10, 10),  # never more rows than prompts
        (CPU, 2, None, 16),  # half the bytes per weight: compute-bound at half the batch
        (DeviceLimits("rtx 3090", "bfloat16", 936e9, 71e12), 2, None, 128),
        (DeviceLimits("h100", "bfloat16", 3.35e12, 989e12), 2, None, MAX_BATCH),
        (DeviceLimits("slow", "float32", 1e9, 1e9), 4, None, 2),
    ],
)
def test_decode_batch_size(limits, element_size, prompts, expected):
    assert decode_batch_size(Sized(element_size), limits, prompts=prompts) == expected
