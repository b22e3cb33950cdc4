"""Command line: ``pydecode generate "Once upon a time"`` streams text from a real model; ``pydecode complete --json``
answers hosted-API-style JSON requests, one per line; ``pydecode backends``.

Generated text goes to stdout (streamed when one sequence is generated); the timing line goes to stderr. A bad input
ends the command with one line, ``pydecode: error: ...``, and exit status 2 (a traceback only with ``--verbose``).
Parsing imports nothing heavy: ``--help`` answers without importing torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# CLI flag -> generate() keyword, for the settings passed on only when given (else the model's defaults apply)
SAMPLING_FLAGS = {
    "temperature": float, "top_k": int, "top_p": float, "min_p": float, "typical_p": float, "top_h": float,
    "epsilon_cutoff": float, "eta_cutoff": float, "repetition_penalty": float, "frequency_penalty": float,
    "presence_penalty": float, "no_repeat_ngram_size": int, "seed": int,
}
DEFAULT_MAX_NEW_TOKENS = 64
INPUT_ERRORS = (ValueError, TypeError, OSError)  # bad flags, requests, model names, files: exit 2


class UsageError(Exception):
    """A command-line input the command cannot run with (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises :class:`UsageError` (one line, printed by :func:`main`)."""

    def error(self, message):
        raise UsageError(message)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` where a flag has a default of its own (not for unset or on/off flags)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pydecode", description=__doc__.split("\n\n")[0], formatter_class=_DefaultsFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,complete,backends}")
    backends = commands.add_parser("backends", help="print the backends this process can use",
                                   formatter_class=_DefaultsFormatter)
    backends.add_argument("--verbose", action="store_true", help="also the versions and the environment settings")

    gen = commands.add_parser("generate", help="generate text from a prompt", formatter_class=_DefaultsFormatter)
    gen.add_argument("prompt")
    _model_flags(gen)
    gen.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="tokens to generate")
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--do-sample", dest="do_sample", action="store_true", default=None,
                      help="sample (the sampling flags below take effect)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false",
                      help="greedy decoding (the default of the built-in models)")
    for name, kind in SAMPLING_FLAGS.items():
        gen.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                         help="(default: the model's generation config)")
    gen.add_argument("--num-return-sequences", type=int, default=1, help="sequences to generate")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")

    complete = commands.add_parser(
        "complete", help="answer JSON completion requests read from stdin, one per line",
        formatter_class=_DefaultsFormatter,
        description="Reads one JSON object per line from stdin: a 'prompt' (string or list) or chat 'messages', and "
                    "hosted-API parameters (max_tokens, temperature, top_p, top_k, stop, n, logprobs, seed, "
                    "frequency_penalty, presence_penalty, repetition_penalty, logit_bias, ...; pydecode's names too). "
                    "As on the hosted APIs, requests sample unless temperature is 0. Writes one JSON response per "
                    "line ('choices' with 'text' and 'finish_reason', 'usage'); a bad request gets {'error': ...} "
                    "and the command exits with status 2 after the others.")
    complete.add_argument("--json", action="store_true", required=True, help="JSON lines in and out (required)")
    _model_flags(complete)
    return parser


def _model_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", default="smollm2",
                         help="smollm2, gemma3-270m, or a local Hugging Face model folder")
    command.add_argument("--backend", choices=["auto", "torch", "cpp", "triton", "cuda"], default=None,
                         help="pydecode's kernels (default: auto, or $PYDECODE_BACKEND)")
    command.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    command.add_argument("--verbose", action="store_true",
                         help="print the model folder and active backends; tracebacks on errors")


def generate_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``pydecode.generate`` that the parsed flags ask for."""
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_return_sequences": args.num_return_sequences}
    if args.do_sample is not None:
        kwargs["do_sample"] = args.do_sample
    if args.backend is not None:
        kwargs["backend"] = args.backend
    kwargs.update({name: getattr(args, name) for name in SAMPLING_FLAGS if getattr(args, name) is not None})
    return kwargs


def check_generate_flags(args: argparse.Namespace) -> None:
    """Validate the sampling flags before anything loads (``ValueError`` naming the flag and its range)."""
    from .sampler import SamplingParams

    given = {k: v for k, v in generate_kwargs(args).items() if k != "backend"}
    SamplingParams(**given)


def pick_device(args: argparse.Namespace) -> str:
    """``--device`` (checked), else cuda when available, else cpu; also checks that ``--backend`` can run there."""
    import torch

    from .ops.backends import unusable_reason

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device_type = torch.device(device).type
    except RuntimeError as error:
        raise UsageError(f"argument --device: {error}") from None
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this torch ({torch.__version__}) cannot use CUDA here; "
                         "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    if args.backend not in (None, "auto"):
        reason = unusable_reason(args.backend, device_type)
        if reason is not None:
            raise UsageError(f"--backend {args.backend} cannot run on {device_type}: {reason}")
    return device


def load(args: argparse.Namespace, device: str):
    """``(model, tokenizer)`` of ``--model`` on ``device`` (converting a built-in model on first use)."""
    import transformers

    import pydecode

    from .models import load_model, model_path

    path = model_path(args.model)  # converts on first use, with its progress bars
    if args.verbose:
        print(f"model: {path} on {device}", file=sys.stderr)
        print("backends: " + json.dumps(pydecode.backends()), file=sys.stderr)
    transformers.utils.logging.disable_progress_bar()
    model, tokenizer = load_model(path)
    return model.to(device), tokenizer


def run_generate(args: argparse.Namespace) -> int:
    check_generate_flags(args)
    device = pick_device(args)
    from transformers import TextStreamer

    import pydecode

    model, tokenizer = load(args, device)
    if args.chat:
        if tokenizer.chat_template is None:
            raise UsageError(f"the tokenizer of {args.model!r} has no chat template; drop --chat")
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    else:
        inputs = tokenizer(args.prompt, return_tensors="pt")
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    stream = args.num_return_sequences == 1
    echo = args.prompt if stream and not args.chat else ""

    class EchoingStreamer(TextStreamer):
        """Prints the prompt when generate() hands it over, i.e. once the settings passed its checks."""

        def put(self, value):
            if self.next_tokens_are_prompt and echo:
                print(echo, end="", flush=True)
            super().put(value)

    streamer = EchoingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    start = time.perf_counter()
    sequences = pydecode.generate(model, **inputs, streamer=streamer, **generate_kwargs(args))
    elapsed = time.perf_counter() - start

    prompt_length = inputs["input_ids"].shape[1]
    if not stream:
        for row, text in enumerate(tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)):
            print(f"--- sequence {row}\n{args.prompt if not args.chat else ''}{text}")
    new_tokens = sequences[:, prompt_length:].numel()
    sys.stdout.flush()
    print(f"{new_tokens} tokens in {elapsed:.2f} s: {new_tokens / elapsed:.1f} tokens/s", file=sys.stderr)
    return 0


def run_complete(args: argparse.Namespace, lines) -> int:
    """Answer each JSON request line of ``lines`` on stdout; 2 when some request was bad, else 0."""
    from .llm import LLM

    device = pick_device(args)
    model, tokenizer = load(args, device)
    llm = LLM(model, tokenizer, backend=args.backend or "auto")
    status = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            response = answer(llm, json.loads(line), args.model, number)
        except (json.JSONDecodeError, *INPUT_ERRORS, NotImplementedError) as error:
            if args.verbose:
                raise
            response, status = {"error": {"message": f"line {number}: {error}", "type": "invalid_request_error"}}, 2
        print(json.dumps(response), flush=True)
    return status


def answer(llm, request, model_name: str, number: int) -> dict:
    """The hosted-API-shaped response to one request (``prompt`` or ``messages`` plus SamplingParams fields)."""
    from .sampler import SamplingParams

    if not isinstance(request, dict):
        raise TypeError(f"a request must be a JSON object, got {type(request).__name__}")
    request = dict(request)
    request.pop("model", None)  # the model is the command's --model
    prompt, messages = request.pop("prompt", None), request.pop("messages", None)
    if (prompt is None) == (messages is None):
        raise ValueError("a request needs exactly one of 'prompt' (a string or a list of strings) and 'messages'")
    if "logit_bias" in request and isinstance(request["logit_bias"], dict):  # JSON keys are strings
        request["logit_bias"] = {int(token): bias for token, bias in request["logit_bias"].items()}
    params = SamplingParams(**request)
    if messages is not None:
        results = llm.chat(messages, params)
    else:
        results = llm.complete(prompt, params)
    choices = [completion.to_choice() for completion in results]
    n = params.num_return_sequences
    for i, choice in enumerate(choices):
        choice["index"] = i  # hosted APIs number choices across prompts: prompt i's are i*n .. i*n+n-1
        if messages is not None:
            choice["message"] = {"role": "assistant", "content": choice["text"]}
    prompt_tokens = sum(c.prompt_tokens for c in results[::n])
    completion_tokens = sum(len(c.token_ids) for c in results)
    return {"id": f"cmpl-{number}", "object": "chat.completion" if messages is not None else "text_completion",
            "created": int(time.time()), "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "seconds": results[0].seconds if results else 0.0}


def run_backends(args: argparse.Namespace) -> int:
    import pydecode

    report = pydecode.backends()
    if args.verbose:
        import platform

        import torch

        versions = {"python": platform.python_version(), "torch": torch.__version__,
                    "cuda_available": torch.cuda.is_available()}
        for package in ("transformers", "triton"):
            try:
                versions[package] = __import__(package).__version__
            except ImportError:
                versions[package] = None
        report["versions"] = versions
        report["environment"] = {name: os.environ.get(name) for name in ("PYDECODE_BACKEND", "TRITON_INTERPRET")}
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; a bad input prints one ``pydecode: error: ...`` line and returns 2."""
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "backends":
            return run_backends(args)
        if args.command == "complete":
            return run_complete(args, sys.stdin)
        return run_generate(args)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\npydecode: interrupted", file=sys.stderr)
        return 130
    except (UsageError, *INPUT_ERRORS, NotImplementedError) as error:
        if verbose:
            raise
        print(f"pydecode: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a failure, not a bad input: still one line unless --verbose
        if verbose:
            raise
        models = sys.modules.get("pydecode.models")
        if models is not None and isinstance(error, models.ModelNotInstalledError):
            print(f"pydecode: error: {_one_line(error)}", file=sys.stderr)
            return 2
        print(f"pydecode: error: {type(error).__name__}: {_one_line(error)} (run with --verbose for the traceback)",
              file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())
