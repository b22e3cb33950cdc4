// CUDA adapters of the KIVI ops: check tensors, dispatch dtypes, take the stream, call kivi/kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.cuh"

namespace pydecode {
namespace {

void check_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "KIVI CUDA launch failed: ", cudaGetErrorString(status));
}

// Calls fn(T*, M*) (null pointers carrying the CUDA types) for activations in float / half / bfloat16 and scales
// in float / half.
template <typename T, typename Fn>
void dispatch_meta(at::ScalarType meta, Fn&& fn) {
  if (meta == at::kFloat) return fn(static_cast<T*>(nullptr), static_cast<float*>(nullptr));
  if (meta == at::kHalf) return fn(static_cast<T*>(nullptr), static_cast<__half*>(nullptr));
  TORCH_CHECK(false, "KIVI scales must be float32 or float16, got ", meta);
}

template <typename Fn>
void dispatch(at::ScalarType x, at::ScalarType meta, Fn&& fn) {
  if (x == at::kFloat) return dispatch_meta<float>(meta, fn);
  if (x == at::kHalf) return dispatch_meta<__half>(meta, fn);
  if (x == at::kBFloat16) return dispatch_meta<__nv_bfloat16>(meta, fn);
  TORCH_CHECK(false, "KIVI activations must be float32, float16 or bfloat16, got ", x);
}

template <typename T>
T* ptr(const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> kivi_pack(const at::Tensor& x_in, const std::optional<at::Tensor>& valid,
                                                         int64_t nbits, int64_t group_size, bool per_channel,
                                                         at::ScalarType meta_dtype) {
  TORCH_CHECK(x_in.dim() == 4, "x must have shape (B, H, T, D), got ", x_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3), F = 32 / nbits;
  check_kivi(nbits, group_size, D);
  TORCH_CHECK(!per_channel || T % group_size == 0, "the token count ", T, " must be a multiple of group_size");
  const at::Tensor ok = pack_valid(x, valid, per_channel);
  const auto codes_opt = x.options().dtype(at::kInt), meta_opt = x.options().dtype(meta_dtype);
  at::Tensor codes = per_channel ? at::empty({B, H, T / F, D}, codes_opt) : at::empty({B, H, T, D / F}, codes_opt);
  at::Tensor scale = per_channel ? at::empty({B, H, T / group_size, D}, meta_opt)
                                 : at::empty({B, H, T, D / group_size}, meta_opt);
  at::Tensor zero = at::empty_like(scale);
  dispatch(x.scalar_type(), meta_dtype, [&](auto t, auto m) {
    using TT = std::remove_pointer_t<decltype(t)>;
    using MT = std::remove_pointer_t<decltype(m)>;
    check_launch(kivi_cuda::kivi_pack_cuda<TT, MT>(
        ptr<const TT>(x), ok.defined() ? ok.const_data_ptr<bool>() : nullptr, codes.data_ptr<int32_t>(),
        ptr<MT>(scale), ptr<MT>(zero), B, H, T, D, static_cast<int>(nbits), static_cast<int>(group_size),
        per_channel, c10::cuda::getCurrentCUDAStream()));
  });
  return {codes, scale, zero};
}

at::Tensor kivi_attention(const at::Tensor& query_in, const at::Tensor& key_codes, const at::Tensor& key_scale,
                          const at::Tensor& key_zero, const at::Tensor& value_codes, const at::Tensor& value_scale,
                          const at::Tensor& value_zero, const at::Tensor& residual_keys_in,
                          const at::Tensor& residual_values_in, const std::optional<at::Tensor>& mask_in,
                          int64_t n_quant, int64_t n_residual, double scale, int64_t nbits, int64_t group_size) {
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor query = query_in.contiguous();
  const at::Tensor rk = residual_keys_in.contiguous(), rv = residual_values_in.contiguous();
  const at::Tensor mask = check_attention(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
                                          rk, rv, mask_in, n_quant, n_residual, nbits, group_size);
  const int64_t B = query.size(0), Hq = query.size(1), Q = query.size(2), D = query.size(3);
  const int64_t Hkv = value_codes.size(1), capacity = value_codes.size(2);
  TORCH_CHECK(D <= kivi_cuda::kMaxDim && group_size <= 128, "the CUDA KIVI attention needs head_dim <= ",
              kivi_cuda::kMaxDim, " and group_size <= 128");
  int sms = 0;
  check_launch(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, query.device().index()));
  const int64_t splits = kivi_splits(n_quant + n_residual, B * Hkv, 4 * static_cast<int64_t>(sms));
  at::Tensor workspace = at::empty({kivi_cuda::attention_workspace_floats(B, Hq, Hkv, Q, D, splits)},
                                   query.options().dtype(at::kFloat));
  at::Tensor out = at::empty_like(query);
  dispatch(query.scalar_type(), key_scale.scalar_type(), [&](auto t, auto m) {
    using TT = std::remove_pointer_t<decltype(t)>;
    using MT = std::remove_pointer_t<decltype(m)>;
    const kivi_cuda::AttentionParams<TT, MT> params{
        ptr<const TT>(query), key_codes.const_data_ptr<int32_t>(), ptr<const MT>(key_scale), ptr<const MT>(key_zero),
        value_codes.const_data_ptr<int32_t>(), ptr<const MT>(value_scale), ptr<const MT>(value_zero),
        ptr<const TT>(rk), ptr<const TT>(rv), mask.defined() ? mask.const_data_ptr<bool>() : nullptr, ptr<TT>(out),
        B, Hq, Hkv, Q, D, capacity, rk.size(2), n_quant, n_residual, static_cast<float>(scale),
        static_cast<int>(nbits), static_cast<int>(group_size)};
    check_launch(kivi_cuda::kivi_attention_cuda<TT, MT>(params, splits, workspace.data_ptr<float>(),
                                                        c10::cuda::getCurrentCUDAStream()));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("kivi_pack", &kivi_pack);
  m.impl("kivi_attention", &kivi_attention);
}

}  // namespace pydecode
