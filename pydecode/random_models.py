"""Random-weight models of real architectures, for benchmarks on machines that cannot fetch or convert the real ones
(the lent GPU machine has no package index, and SmolLM2's GGUF is larger than what a call can carry).

A decode step costs the same with random weights as with trained ones, so speed comparisons stay valid; the tokens
are meaningless but identical between providers given the same weights. ``load_model("llama-1b-random")`` (through
:func:`pydecode.models.load_model`) returns the model and a byte tokenizer (one token per UTF-8 byte, ids 0-255).
"""
from __future__ import annotations

import torch

EOS_TOKEN, EOS_ID = "<|endoftext|>", 256  # the byte tokenizer's one special token
_LLAMA = dict(model_type="llama", hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None,
              eos_token_id=EOS_ID, pad_token_id=EOS_ID)

ARCHITECTURES = {
    # SmolLM2-135M's shapes (its converted config.json): 30 layers, 9 query / 3 kv heads of 64.
    "smollm2-random": dict(_LLAMA, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                           max_position_embeddings=8192, rope_theta=100000.0),
    # Llama-3.2-1B's shapes: 16 layers, 32 query / 8 kv heads of 64, a 128256-token vocabulary.
    "llama-1b-random": dict(_LLAMA, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                            num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                            max_position_embeddings=131072, rope_theta=500000.0),
}


def byte_tokenizer():
    """A fast tokenizer with one token per byte (ids 0-255) and ``<|endoftext|>`` (id 256) as eos and padding; it pads
    on the left, as batched generation needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(_byte_characters())}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                   padding_side="left")


def _byte_characters() -> list[str]:
    """The character standing for each byte 0-255 in byte-level BPE vocabularies (GPT-2's mapping): printable bytes
    stand for themselves, the others for chr(256), chr(257), ... in byte order."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, extra = [], 256
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(extra))
            extra += 1
    return chars


def random_model(name: str, dtype: torch.dtype | str | None = None, seed: int = 0):
    """``(model, tokenizer)``: the architecture ``name`` of :data:`ARCHITECTURES` with seeded random weights."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's random state untouched
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(architecture_config(name),
                                                 dtype=dtype if dtype is not None else torch.float32)
    return model.eval(), byte_tokenizer()


def architecture_config(name: str):
    """The transformers config of the architecture ``name`` of :data:`ARCHITECTURES`."""
    from transformers import AutoConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"name must be one of {sorted(ARCHITECTURES)}, got {name!r}")
    kwargs = dict(ARCHITECTURES[name])
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
