"""Command line: ``pydecode generate "Once upon a time"`` streams text from a real model; ``pydecode backends``.

The text goes to stdout (streamed when one sequence is generated); the timing line goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

# CLI flag -> generate() keyword, for the settings passed on only when given (else the model's defaults apply)
SAMPLING_FLAGS = {
    "temperature": float, "top_k": int, "top_p": float, "min_p": float, "typical_p": float, "top_h": float,
    "epsilon_cutoff": float, "eta_cutoff": float, "repetition_penalty": float, "frequency_penalty": float, "presence_penalty": float,
    "no_repeat_ngram_size": int, "seed": int,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pydecode", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="print the backends this process can use")

    gen = commands.add_parser("generate", help="generate text from a prompt")
    gen.add_argument("prompt")
    gen.add_argument("--model", default="smollm2",
                     help="smollm2 (default), gemma3-270m, or a local Hugging Face model folder")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--do-sample", dest="do_sample", action="store_true", default=None,
                      help="sample (the sampling flags below take effect)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false", help="greedy decoding (the default)")
    for name, kind in SAMPLING_FLAGS.items():
        gen.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    gen.add_argument("--num-return-sequences", type=int, default=1)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--backend", choices=["auto", "torch", "cpp", "triton", "cuda"], default=None)
    gen.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    gen.add_argument("--verbose", action="store_true", help="print the active backends and the model folder")
    return parser


def generate_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``pydecode.generate`` that the parsed flags ask for."""
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_return_sequences": args.num_return_sequences}
    if args.do_sample is not None:
        kwargs["do_sample"] = args.do_sample
    if args.backend is not None:
        kwargs["backend"] = args.backend
    kwargs.update({name: getattr(args, name) for name in SAMPLING_FLAGS if getattr(args, name) is not None})
    return kwargs


def run_generate(args: argparse.Namespace) -> None:
    import torch
    import transformers
    from transformers import TextStreamer

    import pydecode
    from pydecode.models import load_model, model_path

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = model_path(args.model)  # converts on first use, with its progress bars
    if args.verbose:
        print(f"model: {path} on {device}", file=sys.stderr)
        print("backends: " + json.dumps(pydecode.backends()), file=sys.stderr)
    transformers.utils.logging.disable_progress_bar()
    model, tokenizer = load_model(path)
    model.to(device)
    if args.chat:
        if tokenizer.chat_template is None:
            raise SystemExit(f"pydecode: the tokenizer of {args.model!r} has no chat template; drop --chat")
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    else:
        inputs = tokenizer(args.prompt, return_tensors="pt")
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    stream = args.num_return_sequences == 1
    if stream and not args.chat:
        print(args.prompt, end="", flush=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None

    start = time.perf_counter()
    sequences = pydecode.generate(model, **inputs, streamer=streamer, **generate_kwargs(args))
    elapsed = time.perf_counter() - start

    prompt_length = inputs["input_ids"].shape[1]
    if not stream:
        for row, text in enumerate(tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)):
            print(f"--- sequence {row}\n{args.prompt if not args.chat else ''}{text}")
    new_tokens = sequences[:, prompt_length:].numel()
    print(f"{new_tokens} tokens in {elapsed:.2f} s: {new_tokens / elapsed:.1f} tokens/s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "backends":
        import pydecode

        print(json.dumps(pydecode.backends(), indent=2))
    else:
        run_generate(args)
    return 0
