"""Where each backend's implementation of each op lives (imported lazily by :mod:`.backends`).

Backend contracts (every implementation must match the reference in :mod:`.reference`):

- ``sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> tokens (B,) int64``
- ``sample_logprobs(...)``, the same arguments ``-> (tokens, logprob, processed_logprob)``: the draw of ``sample``
  and the token's log-softmax under the input and under the processed logits
- ``penalties(logits, token_counts, prompt_mask, repetition, frequency, presence) -> logits`` (in place, float32)
- ``record(token_counts, tokens) -> token_counts`` (in place)
- ``logprobs(logits, tokens, top_n) -> (chosen (B,), top_values (B, n), top_ids (B, n))``

Per-row parameters are a Python scalar (the same for every row) or a tensor of shape (B,).
"""
from .backends import register

_REFERENCE = "pydecode.ops.reference"
_NATIVE = "pydecode.ops.native"  # torch.ops.pydecode.* adapters: the cpp and cuda backends share them
_TRITON = "pydecode.triton_kernels"

for _backend, _module in (("cpp", _NATIVE), ("cuda", _NATIVE)):
    register("sample", _backend, f"{_module}:top_k_top_p_sample")
    register("sample_logprobs", _backend, f"{_module}:top_k_top_p_sample_logprobs")
    register("penalties", _backend, f"{_module}:apply_penalties_")
    register("record", _backend, f"{_module}:record_tokens_")
    register("logprobs", _backend, f"{_module}:token_logprobs")

register("sample", "torch", f"{_REFERENCE}.sampling:top_k_top_p_sample")
register("sample_logprobs", "torch", f"{_REFERENCE}.sampling:top_k_top_p_sample_logprobs")
register("penalties", "torch", f"{_REFERENCE}.penalties:apply_penalties_")
register("record", "torch", f"{_REFERENCE}.penalties:record_tokens_")
register("logprobs", "torch", f"{_REFERENCE}.logprobs:token_logprobs")

register("sample", "triton", f"{_TRITON}.sampling:top_k_top_p_sample")
register("sample_logprobs", "triton", f"{_TRITON}.sampling:top_k_top_p_sample_logprobs")
register("penalties", "triton", f"{_TRITON}.penalties:apply_penalties_")
register("record", "triton", f"{_TRITON}.penalties:record_tokens_")
register("logprobs", "triton", f"{_TRITON}.logprobs:token_logprobs")

# degeneration_score(candidates, context, context_mask, probs, alpha, normalize_context) -> (best (B,), scores (B, K))
register("degeneration_score", "torch", f"{_REFERENCE}.contrastive:degeneration_score")
register("degeneration_score", "triton", f"{_TRITON}.contrastive:degeneration_score")
register("degeneration_score", "cpp", "pydecode.ops.contrastive_native:degeneration_score")
register("degeneration_score", "cuda", "pydecode.ops.contrastive_native:degeneration_score")

# beam search: beam_topk(logits, beam_scores, num_beams, k, log_softmax) -> (scores, tokens, beams)
register("beam_topk", "torch", f"{_REFERENCE}.beam:beam_topk")
register("beam_topk", "cpp", "pydecode.ops.beam_native:beam_topk")
register("beam_topk", "cuda", "pydecode.ops.beam_native:beam_topk_cuda")
register("beam_topk", "triton", f"{_TRITON}.beam:beam_topk")

# speculative decoding: verify(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds,
# step) -> (accepted (B,), next_tokens (B,))
register("verify", "torch", f"{_REFERENCE}.verify:verify")
register("verify", "cpp", "pydecode.ops.verify_native:verify")
register("verify", "cuda", "pydecode.ops.verify_native:verify")
register("verify", "triton", f"{_TRITON}.verify:verify")
