"""The ``pydecode`` command: argument parsing, one-line errors, ``backends``, ``complete --json`` and a broken pipe
on a tiny random model saved to a folder, and end to end on SmolLM2 behind ``real_model``."""
import io
import json
import subprocess
import sys

import pytest
import torch

from pydecode.cli import UsageError, build_parser, generate_kwargs, main


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
def test_bad_flags_raise_usage_errors(argv):
    with pytest.raises(UsageError):
        parse(*argv)


BAD_COMMANDS = {
    "temperature": (["generate", "Hi", "--temperature", "-1"], "temperature must lie in [0.0, inf), got -1.0"),
    "top_p": (["generate", "Hi", "--top-p", "1.5"], "top_p must lie in (0.0, 1.0], got 1.5"),
    "max_new_tokens": (["generate", "Hi", "--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1"),
    "flag_type": (["generate", "Hi", "--top-k", "x"], "argument --top-k: invalid int value: 'x'"),
    "no_prompt": (["generate"], "the following arguments are required: prompt"),
    "no_command": ([], "the following arguments are required"),
    "unknown_flag": (["generate", "Hi", "--temprature", "1"], "unrecognized arguments: --temprature 1"),
    "model": (["generate", "Hi", "--model", "no-such-model"], "model must be one of ['gemma3-270m', 'smollm2']"),
    "json_missing": (["complete"], "the following arguments are required: --json"),
    "cuda": (["generate", "Hi", "--device", "cuda"], "use --device cpu"),
    "device_name": (["generate", "Hi", "--device", "gpu0"], "argument --device"),
    "triton_on_cpu": (["generate", "Hi", "--backend", "triton", "--device", "cpu"], "set TRITON_INTERPRET=1"),
    "cuda_backend_on_cpu": (["generate", "Hi", "--backend", "cuda", "--device", "cpu"], "use backend 'cpp' or"),
}


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_every_input_error_is_one_line_and_exit_2(case, capsys, monkeypatch):
    argv, message = BAD_COMMANDS[case]
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the tests' own setting would make Triton usable
    monkeypatch.delenv("PYDECODE_BACKEND", raising=False)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("pydecode: error: ")
    assert message in err


def test_verbose_shows_the_traceback():
    with pytest.raises(ValueError, match="temperature"):
        main(["generate", "Hi", "--temperature", "-1", "--verbose"])


def test_help_shows_defaults_without_importing_torch():
    code = ("import sys\nfrom pydecode.cli import main\ntry:\n    main(['generate', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")
    assert "(default: 64)" in result.stdout and "(default: smollm2)" in result.stdout


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "torch" in report["active"]["cpu"]
    assert main(["backends", "--verbose"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"] == torch.__version__ and "TRITON_INTERPRET" in report["environment"]


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """A tiny random Llama with the byte tokenizer (and a chat template), saved as a Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pydecode.random_models import EOS_ID, byte_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=EOS_ID + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         eos_token_id=EOS_ID, pad_token_id=EOS_ID, bos_token_id=None)
    folder = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_complete_json_lines(tiny_model_folder, capsys, monkeypatch):
    import pydecode

    requests = [
        {"prompt": "Hello", "max_tokens": 5, "temperature": 0, "logprobs": 2},
        {"prompt": ["Hi", "Once upon"], "max_tokens": 3, "n": 2, "seed": 4, "top_p": 0.9, "stop": ["zz"]},
        {"prompt": "Hello", "temperature": -1},
        {"messages": [{"role": "user", "content": "Hey"}], "max_tokens": 3, "temperature": 0},
        {"prompt": "Hello", "max_tokens": 2, "stream_options": {}},
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(json.dumps(r) for r in requests) + "\n\nnot json\n"))
    assert main(["complete", "--json", "--model", tiny_model_folder, "--device", "cpu"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    first, second, bad, chat, unknown, garbage = map(json.loads, lines)
    llm = pydecode.LLM(tiny_model_folder, device="cpu")
    expected = llm.complete("Hello", pydecode.SamplingParams(max_tokens=5, temperature=0, logprobs=2))[0]
    choice = first["choices"][0]
    assert (choice["text"], choice["token_ids"], choice["finish_reason"]) == (expected.text, expected.token_ids,
                                                                              "length")
    assert len(choice["logprobs"]["tokens"]) == 5 and len(choice["logprobs"]["top_logprobs"][0]) == 2
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert first["object"] == "text_completion" and first["model"] == tiny_model_folder
    assert [c["index"] for c in second["choices"]] == [0, 1, 2, 3]
    assert second["usage"]["prompt_tokens"] == len("Hi") + len("Once upon")
    assert "temperature must lie in" in bad["error"]["message"] and bad["error"]["message"].startswith("line 3")
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["prompt_tokens"] == len("<user>Hey<assistant>")
    assert "stream_options" in unknown["error"]["message"] and "line 7" in garbage["error"]["message"]


def test_broken_pipe_exits_quietly(tiny_model_folder):
    process = subprocess.Popen(
        [sys.executable, "-m", "pydecode", "generate", "Once", "--model", tiny_model_folder, "--device", "cpu",
         "--max-new-tokens", "1000", "--backend", "torch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(2)
    process.stdout.close()  # as `| head -c 2` does
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0 and b"Traceback" not in err and b"Error" not in err


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
