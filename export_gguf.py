"""Export a tuned model as one GGUF file for llama.cpp, Ollama or LM Studio, with an Ollama Modelfile beside it.

    python export_gguf.py outputs/SmolLM2-135M-SFT-GRPO/merged --output exports/smollm2-grpo.gguf
    python export_gguf.py outputs/Qwen-0.5B-GRPO --outtype q8_0 --output exports/qwen-grpo.gguf   # a LoRA adapter
    ollama create smollm2-grpo -f exports/Modelfile && ollama run smollm2-grpo
    llama-cli -m exports/smollm2-grpo.gguf                     # llama.cpp's own chat
    python ask.py --checkpoint exports/smollm2-grpo.gguf --index 12   # llama.cpp's answer to a GSM8K problem, scored

CHECKPOINT is a merged model folder, a full checkpoint or a LoRA adapter folder. An adapter is merged into its base
model's float32 weights first (the base as evaluate.py finds it, or --base_model); a 4-bit base is refused, since
merging there rounds the tuned weights onto the base's 4-bit grid. The file holds:
- the weights in --outtype: f32, f16 (default), bf16 or q8_0 (llama.cpp's 8-bit blocks of 32); norms and biases
  stay float32. Llama's q and k rows are reordered for llama.cpp's rotary layout (pairs side by side, where
  transformers keeps the two halves of each head apart); Qwen2 uses transformers' layout as it is;
- the tokenizer as llama.cpp's byte-level BPE (`gpt2`) kind with the pre-tokenizer's name, the merges and token
  types, eos = the chat template's end of turn (`<|im_end|>` for ChatML), and the chat template (gguf_tokenizer.py);
- beside it, `Modelfile`: Ollama's template for the same prompt, its stop tokens, and the training system prompt.
Written with PyPI's `gguf` package (GGUFWriter, its Q8_0 and bf16 rounding, its tensor names). Llama and Qwen2
models only; another architecture, or any bad input, is one error line and exit code 2 before anything is
written and before any weight is loaded. llama.cpp itself checks the result in tests/test_export_gguf.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gguf_tokenizer import GgufVocab, TokenizerError, gguf_vocab, modelfile
from models import InputError, find_model, has_tokenizer, local_model_folder, read_checkpoint, trained_from
from options import exit_with, parse_flags

PROG = "export_gguf.py"
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


@dataclass
class ExportArguments:
    """Command-line flags of export_gguf.py; the checkpoint may come first without its flag."""

    checkpoint: str | None = field(
        default=None,
        metadata={"help": "Merged model folder, full checkpoint or LoRA adapter folder (also the first argument)."},
    )
    output: str | None = field(
        default=None,
        metadata={"help": "The .gguf file to write; Modelfile goes beside it. Default: exports/NAME-OUTTYPE.gguf"},
    )
    outtype: Literal["f32", "f16", "bf16", "q8_0"] = field(
        default="f16", metadata={"help": "Weight type: f32, f16, bf16, or q8_0 (8-bit, blocks of 32)."}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "An adapter's base model. Default: its adapter_config.json's base."}
    )


@dataclass
class Job:
    """What to export, resolved and checked before any weight loads."""

    checkpoint: Path
    weights: str  # folder (or hub name) of the full weights: the checkpoint, or an adapter's base
    adapter: Path | None
    config: dict[str, Any]
    architecture: str
    vocab: GgufVocab
    output: Path
    notes: list[str] = field(default_factory=list)


def read_config(model: str) -> dict[str, Any]:
    """config.json of a local folder or of the local hub cache; an InputError when it is not at hand."""
    folder = local_model_folder(model)
    try:
        return json.loads((folder / "config.json").read_text())
    except (TypeError, OSError, ValueError) as error:
        raise InputError(f"{model}: no readable config.json ({type(error).__name__})") from error


def is_four_bit(config: dict[str, Any]) -> bool:
    """Whether config.json describes weights stored in 4 bits (bitsandbytes nf4/fp4, GPTQ or AWQ at 4)."""
    quant = config.get("quantization_config") or {}
    return bool(quant.get("load_in_4bit") or quant.get("bits") == 4 or quant.get("_load_in_4bit"))


def default_output(checkpoint: Path, outtype: str) -> Path:
    """exports/NAME-OUTTYPE.gguf; a run's merged/ or checkpoint-N/ folder is named after its run as well."""
    name = checkpoint.name
    if name == "merged" or name.startswith("checkpoint-"):
        name = f"{checkpoint.parent.name}-{name}"
    return Path("exports") / f"{name}-{outtype}.gguf"


def plan(args: ExportArguments) -> Job:
    """Resolve and check the checkpoint, its base, the tokenizer and the output; an InputError says what is wrong."""
    from checks import unwritable_folder

    if args.checkpoint is None:
        raise InputError("give the checkpoint to export: python export_gguf.py CHECKPOINT [--output FILE.gguf]")
    adapter_config = read_checkpoint(args.checkpoint)
    checkpoint = Path(args.checkpoint).expanduser().resolve()
    output = Path(args.output).expanduser() if args.output else default_output(checkpoint, args.outtype)
    if output.is_dir():
        raise InputError(f"--output {output}: is a folder; name the .gguf file to write")
    if output.suffix != ".gguf":
        raise InputError(f"--output {output}: name a .gguf file")
    problem = unwritable_folder(output.parent)
    if problem:
        raise InputError(f"--output {output}: {problem}")

    notes = []
    weights, adapter = str(checkpoint), None
    if adapter_config is not None:
        adapter = checkpoint
        weights = args.base_model or adapter_config.get("base_model_name_or_path")
        if not weights:
            raise InputError(f"{checkpoint}: the adapter names no base model; pass --base_model")
        problem = find_model(weights)
        if problem:
            raise InputError(f"base model '{weights}' of the adapter not found: {problem} -- pass --base_model")
        if local_model_folder(weights) is not None:
            weights = str(local_model_folder(weights).resolve())
        notes.append(f"adapter {checkpoint} merged into {weights} in float32")
    config = read_config(weights)
    if is_four_bit(config):
        raise InputError(
            f"base model '{weights}' is stored in 4 bits: merging the adapter there would round the tuned weights to "
            f"its 4-bit grid; pass its float weights as --base_model (e.g. the model the 4-bit copy was made from)"
        )
    architecture = ARCHITECTURES.get((config.get("architectures") or ["?"])[0])
    if architecture is None:
        raise InputError(
            f"{weights}: a {config.get('model_type')} model ({', '.join(config.get('architectures') or ['?'])}); "
            f"{PROG} exports {', '.join(ARCHITECTURES)}"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise InputError(f"{weights}: rope scaling '{rope.get('rope_type', rope.get('type'))}' is not exported")

    tokenizer_folder = next(
        (str(f) for f in (checkpoint, adapter and weights, trained_from(checkpoint)) if f and has_tokenizer(str(f))),
        None,
    )
    if tokenizer_folder is None:
        raise InputError(f"{checkpoint}: no tokenizer in it, nor in the model it was trained from")
    from transformers import AutoTokenizer

    try:
        vocab = gguf_vocab(AutoTokenizer.from_pretrained(tokenizer_folder), config["vocab_size"])
    except TokenizerError as error:
        raise InputError(f"the tokenizer in {tokenizer_folder}: {error}") from error
    return Job(checkpoint, weights, adapter, config, architecture, vocab, output, notes + vocab.notes)


def load_state_dict(job: Job) -> dict[str, Any]:
    """The model's float32 weights by transformers name, an adapter merged in; a tied output head left out."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(job.weights, dtype=torch.float32)
    if job.adapter is not None:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():
            # peft only warns when an adapter's weights do not fit the model: exporting the base in its name is worse.
            warnings.filterwarnings("error", message="Found missing adapter keys")
            try:
                model = PeftModel.from_pretrained(model, str(job.adapter)).merge_and_unload()
            except UserWarning as warning:
                raise InputError(f"{job.adapter}: its weights do not fit {job.weights} ({warning})") from None
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # llama.cpp reads the embedding as the output head when there is none
    return state


def rope_pairs(weight: Any, heads: int) -> Any:
    """q or k rows (or biases) of each head reordered from transformers' rotary layout, where a head's dimension i
    turns with dimension i + d/2, to llama.cpp's Llama layout, where it turns with its neighbour i + 1."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def convert(name: str, tensor: Any, job: Job, outtype: str, names: Any) -> tuple[str, Any, Any]:
    """(GGUF name, data, raw ggml type or None) for one transformers tensor in `outtype`."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if gguf_name is None:
        raise InputError(f"{job.weights}: tensor {name} has no GGUF name for {job.architecture}")
    data = tensor.numpy()
    if job.architecture == "llama" and (".q_proj." in name or ".k_proj." in name):
        heads = job.config["num_attention_heads" if ".q_proj." in name else "num_key_value_heads"]
        data = rope_pairs(data, heads)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim == 1 or outtype == "f32":
        return gguf_name, data, None
    if outtype == "f16":
        return gguf_name, data.astype(np.float16), None
    if outtype == "bf16":
        return gguf_name, quants.quantize(data, GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    if data.shape[-1] % 32:  # rows that do not split into Q8_0's blocks of 32 stay in f16
        return gguf_name, data.astype(np.float16), None
    return gguf_name, quants.quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


def add_metadata(writer: Any, job: Job, outtype: str) -> None:
    """The model's shape, the tokenizer and the chat template as GGUF keys."""
    from gguf import GGML_QUANT_VERSION, LlamaFileType

    config, vocab = job.config, job.vocab
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    file_types = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                  "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0}  # fmt: skip
    writer.add_name(job.checkpoint.name if job.checkpoint.name != "merged" else job.checkpoint.parent.name)
    writer.add_file_type(file_types[outtype])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for key, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    writer.add_chat_template(vocab.chat_template)


def export(job: Job, outtype: str) -> dict[str, Any]:
    """Load the weights, convert them tensor by tensor (a progress bar) and write the GGUF file and the Modelfile;
    the file appears under its name only once complete."""
    from gguf import GGUFWriter, MODEL_ARCH, get_tensor_name_map
    from tqdm import tqdm

    from prompts import SYSTEM_PROMPT

    started = time.perf_counter()
    state = load_state_dict(job)
    arch = {"llama": MODEL_ARCH.LLAMA, "qwen2": MODEL_ARCH.QWEN2}[job.architecture]
    names = get_tensor_name_map(arch, job.config["num_hidden_layers"])
    job.output.parent.mkdir(parents=True, exist_ok=True)
    partial = job.output.with_name(job.output.name + ".partial")
    writer = GGUFWriter(str(partial), job.architecture)
    try:
        add_metadata(writer, job, outtype)
        for name in tqdm(list(state), desc=f"{PROG}: tensors to {outtype}", unit="tensor", file=sys.stderr):
            gguf_name, data, raw_type = convert(name, state.pop(name), job, outtype, names)
            writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, job.output)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)  # an export cut short leaves no file that looks complete
    modelfile_path = job.output.parent / "Modelfile"
    modelfile_path.write_text(modelfile(job.output.name, job.vocab, SYSTEM_PROMPT))
    return {"seconds": time.perf_counter() - started, "bytes": job.output.stat().st_size, "modelfile": modelfile_path}


def main(argv: list[str] | None = None) -> Path:
    """Check the input, export, and print what was written and how to run it; return the GGUF file's path."""
    args = parse_flags(ExportArguments, argv, PROG, __doc__.splitlines()[0], positional="checkpoint")
    try:
        job = plan(args)
        print(f"{PROG}: {job.architecture} model {job.weights} -> {job.output} ({args.outtype})", file=sys.stderr)
        for note in job.notes:
            print(f"{PROG}: {note}", file=sys.stderr)
        done = export(job, args.outtype)
    except InputError as error:
        exit_with(PROG, str(error))
    print(
        f"{job.output}: {done['bytes'] / 1e6:.1f} MB in {done['seconds']:.1f} s; tokenizer {job.vocab.pre}, "
        f"eos {job.vocab.end_of_turn!r}; {done['modelfile']} for Ollama\n"
        f"next:  llama-cli -m {job.output}\n"
        f"       cd {job.output.parent} && ollama create {job.output.stem} -f Modelfile"
        f" && ollama run {job.output.stem}\n"
        f"       python ask.py --checkpoint {job.output} --question 'What is 7 * 8?'"
    )
    return job.output


if __name__ == "__main__":
    main()
