"""The ``pydecode`` command: argument parsing, ``backends``, and end to end on SmolLM2 behind ``real_model``."""
import json
import subprocess
import sys

import pytest

from pydecode.cli import build_parser, generate_kwargs, main


def parse(*argv):
    return build_parser().parse_args(["generate", "Hello", *argv])


def test_defaults_pass_only_length():
    args = parse()
    assert args.model == "smollm2" and not args.chat
    assert generate_kwargs(args) == {"max_new_tokens": 64, "num_return_sequences": 1}


def test_flags_become_generate_kwargs():
    args = parse("--do-sample", "--temperature", "0.7", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.05",
                 "--typical-p", "0.95", "--repetition-penalty", "1.1", "--frequency-penalty", "0.5",
                 "--presence-penalty", "0.25", "--no-repeat-ngram-size", "3", "--seed", "7", "--max-new-tokens", "5",
                 "--num-return-sequences", "2", "--backend", "torch", "--top-h", "0.5", "--eta-cutoff", "0.01")
    assert generate_kwargs(args) == dict(
        max_new_tokens=5, num_return_sequences=2, do_sample=True, backend="torch", temperature=0.7, top_k=40,
        top_p=0.9, min_p=0.05, typical_p=0.95, repetition_penalty=1.1, frequency_penalty=0.5, presence_penalty=0.25,
        no_repeat_ngram_size=3, seed=7, top_h=0.5, eta_cutoff=0.01,
    )
    assert generate_kwargs(parse("--greedy"))["do_sample"] is False


@pytest.mark.parametrize("argv", [["--greedy", "--do-sample"], ["--backend", "numpy"], ["--top-k", "x"]])
def test_bad_flags_exit(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "torch" in report["active"]["cpu"]


@pytest.mark.real_model
def test_generate_streams_text(capsys):
    assert main(["generate", "Once upon a time", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time") and len(out) > len("Once upon a time\n")
    assert err.strip().splitlines()[-1].endswith("tokens/s")


@pytest.mark.real_model
def test_generate_several_sampled_sequences(capsys):
    main(["generate", "The sky is", "--max-new-tokens", "4", "--do-sample", "--top-k", "20", "--seed", "3",
          "--num-return-sequences", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("--- sequence") == 2


@pytest.mark.real_model
def test_console_entry_point_chat():
    result = subprocess.run(
        [sys.executable, "-m", "pydecode", "generate", "What is 2+2?", "--chat", "--max-new-tokens", "6",
         "--device", "cpu", "--verbose"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "backends:" in result.stderr and result.stderr.strip().endswith("tokens/s")
