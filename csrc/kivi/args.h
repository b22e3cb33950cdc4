// Tensor checks shared by the CPU and CUDA adapters of the KIVI ops (layouts: pydecode/ops/kivi/reference.py).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>

namespace pydecode {

inline void check_kivi(int64_t nbits, int64_t group_size, int64_t dim) {
  TORCH_CHECK(nbits == 2 || nbits == 4, "nbits must be 2 or 4, got ", nbits);
  TORCH_CHECK(group_size > 0 && group_size % 16 == 0, "group_size must be a positive multiple of 16, got ", group_size);
  TORCH_CHECK(dim % group_size == 0, "head_dim ", dim, " must be divisible by group_size ", group_size);
}

// The (B, T) bool token mask of kivi_pack (keys only), or an undefined tensor.
inline at::Tensor pack_valid(const at::Tensor& x, const std::optional<at::Tensor>& valid, bool per_channel) {
  if (!per_channel || !valid.has_value() || !valid->defined()) return at::Tensor();
  TORCH_CHECK(valid->scalar_type() == at::kBool && valid->sizes() == at::IntArrayRef({x.size(0), x.size(2)}) &&
                  valid->device() == x.device(),
              "valid must be bool of shape (B, T) on ", x.device());
  return valid->contiguous();
}

// Checks the attention inputs; returns the (B, Q, n_quant + n_residual) bool mask or an undefined tensor.
inline at::Tensor check_attention(const at::Tensor& query, const at::Tensor& key_codes, const at::Tensor& key_scale,
                                  const at::Tensor& key_zero, const at::Tensor& value_codes,
                                  const at::Tensor& value_scale, const at::Tensor& value_zero,
                                  const at::Tensor& residual_keys, const at::Tensor& residual_values,
                                  const std::optional<at::Tensor>& mask, int64_t n_quant, int64_t n_residual,
                                  int64_t nbits, int64_t group_size) {
  TORCH_CHECK(query.dim() == 4, "query must have shape (B, Hq, Q, D), got ", query.sizes());
  const int64_t B = query.size(0), Hq = query.size(1), Q = query.size(2), D = query.size(3);
  check_kivi(nbits, group_size, D);
  const int64_t Hkv = value_codes.size(1), capacity = value_codes.size(2), F = 32 / nbits;
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "query heads ", Hq, " must be a multiple of kv heads ", Hkv);
  TORCH_CHECK(key_codes.sizes() == at::IntArrayRef({B, Hkv, capacity / F, D}) &&
                  value_codes.sizes() == at::IntArrayRef({B, Hkv, capacity, D / F}) &&
                  key_scale.sizes() == at::IntArrayRef({B, Hkv, capacity / group_size, D}) &&
                  value_scale.sizes() == at::IntArrayRef({B, Hkv, capacity, D / group_size}) &&
                  key_zero.sizes() == key_scale.sizes() && value_zero.sizes() == value_scale.sizes(),
              "packed stores do not match query ", query.sizes(), " with capacity ", capacity);
  TORCH_CHECK(key_codes.scalar_type() == at::kInt && value_codes.scalar_type() == at::kInt &&
                  key_scale.scalar_type() == key_zero.scalar_type() &&
                  value_scale.scalar_type() == key_scale.scalar_type() &&
                  value_zero.scalar_type() == key_scale.scalar_type(),
              "codes must be int32 and every scale/zero of one dtype");
  for (const at::Tensor* t : {&key_codes, &key_scale, &key_zero, &value_codes, &value_scale, &value_zero}) {
    TORCH_CHECK(t->is_contiguous() && t->device() == query.device(), "packed stores must be contiguous, on ",
                query.device());
  }
  TORCH_CHECK(n_quant >= 0 && n_quant % group_size == 0 && n_quant <= capacity,
              "n_quant must be a multiple of group_size within the capacity, got ", n_quant);
  TORCH_CHECK(residual_keys.sizes() == residual_values.sizes() && residual_keys.dim() == 4 &&
                  residual_keys.size(0) == B && residual_keys.size(1) == Hkv && residual_keys.size(3) == D &&
                  residual_keys.size(2) >= n_residual && n_residual >= 0,
              "residual buffers must have shape (B, Hkv, >= n_residual, D)");
  TORCH_CHECK(residual_keys.scalar_type() == query.scalar_type() &&
                  residual_values.scalar_type() == query.scalar_type(),
              "residual buffers must have the query dtype");
  if (!mask.has_value() || !mask->defined()) return at::Tensor();
  TORCH_CHECK(mask->scalar_type() == at::kBool && mask->sizes() == at::IntArrayRef({B, Q, n_quant + n_residual}) &&
                  mask->device() == query.device(),
              "mask must be bool of shape (B, Q, n_quant + n_residual)");
  return mask->contiguous();
}

// Sequence splits: enough (batch x kv head x split) tasks for `parallel` workers, none under 256 tokens.
inline int64_t kivi_splits(int64_t n_tokens, int64_t tasks, int64_t parallel) {
  if (tasks <= 0) return 1;  // an empty batch: nothing to split
  const int64_t by_length = std::max<int64_t>(1, (n_tokens + 255) / 256);
  return std::min(by_length, std::max<int64_t>(1, (parallel + tasks - 1) / tasks));
}

}  // namespace pydecode
