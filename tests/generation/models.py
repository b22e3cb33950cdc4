"""Tiny seeded random-weight models built from configs (no downloads), shared by the generation tests."""
import functools

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 256
EOS = 5
PAD = 0


@functools.lru_cache(maxsize=None)
def tiny_model(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD)
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, eos_token_id=EOS,
                            bos_token_id=1, pad_token_id=PAD)
        model = GPT2LMHeadModel(config)
    elif kind == "qwen2":
        config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                             eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD)
        model = Qwen2ForCausalLM(config)
    elif kind == "gemma3":  # sliding-window and full attention layers, as the real Gemma-3
        config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                                  max_position_embeddings=256, eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD)
        model = Gemma3ForCausalLM(config)
    else:
        raise ValueError(kind)
    return model.eval()


def padded_batch(batch: int = 3, length: int = 7, seed: int = 0):
    """Random prompts (tokens avoid eos/pad) with left padding of 0, 3 and 1 tokens on the first rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 1][:batch]):
        ids[row, :pad] = PAD
        mask[row, :pad] = 0
    return ids, mask
