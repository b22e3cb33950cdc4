// The one TORCH_LIBRARY(pydecode, m) block: every op's schema, in one place.
// Implementations register per device in csrc/<op>/cpu.cpp (TORCH_LIBRARY_IMPL(pydecode, CPU, m)) and
// csrc/<op>/cuda.cu (TORCH_LIBRARY_IMPL(pydecode, CUDA, m)); fake/meta kernels live in pydecode/ops/<op>/native.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "pydecode/cpu_features.h"

namespace pydecode {
bool built_with_cuda() {
#ifdef PYDECODE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cpu_isa() { return use_avx2() ? "avx2" : "baseline"; }

bool bf16_dot_products() { return use_avx512_bf16(); }

// Sets the choice ("auto": the fastest this CPU runs, or "baseline") and returns the previous one.
std::string set_cpu_isa(const std::string& isa) {
  TORCH_CHECK(isa == "auto" || isa == "baseline", "isa must be 'auto' or 'baseline', got '", isa, "'");
  return avx2_allowed.exchange(isa == "auto") ? "auto" : "baseline";
}
}  // namespace pydecode

TORCH_LIBRARY(pydecode, m) {
  m.def("built_with_cuda() -> bool", &pydecode::built_with_cuda);
  // The instruction set of the CPU kernels' vector loops ("avx2" or "baseline"); set_cpu_isa("baseline") forces the
  // portable ones, "auto" undoes it.
  m.def("cpu_isa() -> str", &pydecode::cpu_isa);
  m.def("set_cpu_isa(str isa) -> str", &pydecode::set_cpu_isa);
  // Whether bfloat16 kernels (decode_linear) run AVX-512 BF16 dot products (else portable loops, slower than oneDNN).
  m.def("bf16_dot_products() -> bool", &pydecode::bf16_dot_products);
  // --- sampling ops ---
  // Per-row parameters are pairs: a (B,) tensor, or None and the scalar that follows it.
  m.def("top_k_top_p_sample(Tensor logits, Tensor? temperature, float temperature_val, Tensor? top_k, int top_k_val, "
        "Tensor? top_p, float top_p_val, Tensor? min_p, float min_p_val, Tensor seeds, int step) -> Tensor");
  // The same draw, with the token's logprob under the input and under the processed distribution.
  m.def("top_k_top_p_sample_logprobs(Tensor logits, Tensor? temperature, float temperature_val, Tensor? top_k, "
        "int top_k_val, Tensor? top_p, float top_p_val, Tensor? min_p, float min_p_val, Tensor seeds, int step) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("apply_penalties_(Tensor(a!) logits, Tensor token_counts, Tensor? prompt_mask, Tensor? repetition, "
        "float repetition_val, Tensor? frequency, float frequency_val, Tensor? presence, float presence_val) -> ()");
  m.def("record_tokens_(Tensor(a!) token_counts, Tensor tokens) -> ()");
  m.def("token_logprobs(Tensor logits, Tensor tokens, int top_n) -> (Tensor, Tensor, Tensor)");
  // --- KV-cache ops (KIVI) ---
  // KIVI: layouts and contracts in pydecode/ops/kivi/reference.py (kivi_pack, kivi_attention).
  m.def("kivi_pack(Tensor x, Tensor? valid, int nbits, int group_size, bool per_channel, ScalarType meta_dtype) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("kivi_attention(Tensor query, Tensor key_codes, Tensor key_scale, Tensor key_zero, Tensor value_codes, "
        "Tensor value_scale, Tensor value_zero, Tensor residual_keys, Tensor residual_values, Tensor? mask, "
        "int n_quant, int n_residual, float scale, int nbits, int group_size) -> Tensor");
  // --- contrastive search and DoLa ops ---
  // Contract in pydecode/ops/degeneration/reference.py; alpha is a (B,) tensor, or None and the scalar that follows.
  m.def("degeneration_score(Tensor candidates, Tensor context, Tensor? context_mask, Tensor probs, Tensor? alpha, "
        "float alpha_val, bool normalize_context) -> (Tensor, Tensor)");
  // --- beam search ops ---
  // beam_topk: contract in pydecode/ops/beam_topk/reference.py; returns (scores, tokens, beams), each (B, k).
  m.def("beam_topk(Tensor logits, Tensor beam_scores, int num_beams, int k, bool log_softmax) -> (Tensor, Tensor, Tensor)");
  // --- model ops ---
  // decode_linear: y = x @ weight^T + bias for a few rows (a decoding step's matmuls on the CPU, float32 or
  // bfloat16); contract in pydecode/ops/linear/reference.py.
  m.def("decode_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // --- verify ops (assisted and prompt-lookup decoding) ---
  // verify: contract in pydecode/ops/verify/reference.py; returns (accepted (B,), next_tokens (B,)).
  m.def("verify(Tensor draft_tokens, Tensor? draft_logits, Tensor target_logits, Tensor num_draft, "
        "Tensor? temperature, float temperature_val, Tensor seeds, int step) -> (Tensor, Tensor)");
}

// Python imports this module as pydecode._C; the ops live in torch.ops.pydecode.
#include <Python.h>
static struct PyModuleDef pydecode_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&pydecode_module); }
