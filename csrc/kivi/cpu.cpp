// CPU adapters of the KIVI ops: check tensors, dispatch dtypes, call the templates of kivi/kernel.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

// Calls fn(T*, M*) (null pointers carrying the types) for activations T in float / Half / BFloat16 and scales M in
// float / Half. The cache uses float scales for float32 models and Half ones otherwise (see kivi.py).
template <typename T, typename Fn>
void dispatch_meta(at::ScalarType meta, Fn&& fn) {
  if (meta == at::kFloat) return fn(static_cast<T*>(nullptr), static_cast<float*>(nullptr));
  if (meta == at::kHalf) return fn(static_cast<T*>(nullptr), static_cast<at::Half*>(nullptr));
  TORCH_CHECK(false, "KIVI scales must be float32 or float16, got ", meta);
}

template <typename Fn>
void dispatch(at::ScalarType x, at::ScalarType meta, Fn&& fn) {
  if (x == at::kFloat) return dispatch_meta<float>(meta, fn);
  if (x == at::kHalf) return dispatch_meta<at::Half>(meta, fn);
  if (x == at::kBFloat16) return dispatch_meta<at::BFloat16>(meta, fn);
  TORCH_CHECK(false, "KIVI activations must be float32, float16 or bfloat16, got ", x);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kivi_pack(const at::Tensor& x_in, const std::optional<at::Tensor>& valid,
                                                         int64_t nbits, int64_t group_size, bool per_channel,
                                                         at::ScalarType meta_dtype) {
  TORCH_CHECK(x_in.dim() == 4, "x must have shape (B, H, T, D), got ", x_in.sizes());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3), F = 32 / nbits;
  check_kivi(nbits, group_size, D);
  const auto codes_opt = x.options().dtype(at::kInt), meta_opt = x.options().dtype(meta_dtype);
  const at::Tensor ok = pack_valid(x, valid, per_channel);
  if (per_channel) {
    TORCH_CHECK(T % group_size == 0, "the token count ", T, " must be a multiple of group_size ", group_size);
    at::Tensor codes = at::empty({B, H, T / F, D}, codes_opt);
    at::Tensor scale = at::empty({B, H, T / group_size, D}, meta_opt), zero = at::empty_like(scale);
    dispatch(x.scalar_type(), meta_dtype, [&](auto t, auto m) {
      using TT = std::remove_pointer_t<decltype(t)>;
      using MT = std::remove_pointer_t<decltype(m)>;
      kivi::pack_keys(x.const_data_ptr<TT>(), ok.defined() ? ok.const_data_ptr<bool>() : nullptr,
                      codes.data_ptr<int32_t>(), scale.data_ptr<MT>(), zero.data_ptr<MT>(), B, H, T, D,
                      static_cast<int>(nbits), static_cast<int>(group_size));
    });
    return {codes, scale, zero};
  }
  at::Tensor codes = at::empty({B, H, T, D / F}, codes_opt);
  at::Tensor scale = at::empty({B, H, T, D / group_size}, meta_opt), zero = at::empty_like(scale);
  dispatch(x.scalar_type(), meta_dtype, [&](auto t, auto m) {
    using TT = std::remove_pointer_t<decltype(t)>;
    using MT = std::remove_pointer_t<decltype(m)>;
    kivi::pack_values(x.const_data_ptr<TT>(), codes.data_ptr<int32_t>(), scale.data_ptr<MT>(), zero.data_ptr<MT>(),
                      B * H * T, D, static_cast<int>(nbits), static_cast<int>(group_size));
  });
  return {codes, scale, zero};
}

at::Tensor kivi_attention(const at::Tensor& query_in, const at::Tensor& key_codes, const at::Tensor& key_scale,
                          const at::Tensor& key_zero, const at::Tensor& value_codes, const at::Tensor& value_scale,
                          const at::Tensor& value_zero, const at::Tensor& residual_keys_in,
                          const at::Tensor& residual_values_in, const std::optional<at::Tensor>& mask_in,
                          int64_t n_quant, int64_t n_residual, double scale, int64_t nbits, int64_t group_size) {
  const at::Tensor query = query_in.contiguous();
  const at::Tensor rk = residual_keys_in.contiguous(), rv = residual_values_in.contiguous();
  const at::Tensor mask = check_attention(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
                                          rk, rv, mask_in, n_quant, n_residual, nbits, group_size);
  const int64_t B = query.size(0), Hq = query.size(1), Q = query.size(2), D = query.size(3);
  const int64_t Hkv = value_codes.size(1), capacity = value_codes.size(2);
  at::Tensor out = at::empty_like(query);
  const int64_t splits = kivi_splits(n_quant + n_residual, B * Hkv, 2 * at::get_num_threads());
  dispatch(query.scalar_type(), key_scale.scalar_type(), [&](auto t, auto m) {
    using TT = std::remove_pointer_t<decltype(t)>;
    using MT = std::remove_pointer_t<decltype(m)>;
    const kivi::AttentionArgs<TT, MT> args{
        query.const_data_ptr<TT>(), key_codes.const_data_ptr<int32_t>(), key_scale.const_data_ptr<MT>(),
        key_zero.const_data_ptr<MT>(), value_codes.const_data_ptr<int32_t>(), value_scale.const_data_ptr<MT>(),
        value_zero.const_data_ptr<MT>(), rk.const_data_ptr<TT>(), rv.const_data_ptr<TT>(),
        mask.defined() ? mask.const_data_ptr<bool>() : nullptr, out.data_ptr<TT>(),
        B, Hq, Hkv, Q, D, capacity, rk.size(2), n_quant, n_residual, static_cast<float>(scale),
        static_cast<int>(nbits), static_cast<int>(group_size)};
    kivi::attention(args, splits);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("kivi_pack", &kivi_pack);
  m.impl("kivi_attention", &kivi_attention);
}

}  // namespace pydecode
