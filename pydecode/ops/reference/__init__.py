"""The ops' pure-PyTorch references in one namespace, for tests: each op package keeps its own ``reference`` module
(the torch backend, the fallback and the oracle every kernel is tested against); production code calls the op
packages' public functions instead."""
from ..constraints import bad_words_banned, no_repeat_ngram_banned
from ..linear.reference import decode_linear
from ..logprobs.reference import token_logprobs
from ..penalties.reference import apply_penalties_, prompt_token_mask, record_tokens_
from ..random import gumbel_noise, random_bits, random_uniform
from ..sample.reference import process_logits, sample_from_processed, top_k_top_p_sample

__all__ = [
    "apply_penalties_", "bad_words_banned", "decode_linear", "gumbel_noise", "no_repeat_ngram_banned", "process_logits",
    "prompt_token_mask", "random_bits", "random_uniform", "record_tokens_", "sample_from_processed",
    "token_logprobs", "top_k_top_p_sample",
]
