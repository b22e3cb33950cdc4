// CPU kernel of apply_penalties_: plain C++ on raw pointers, OpenMP across rows. Semantics are those of
// pydecode/ops/penalties/reference.py; the ATen adapter is cpu.cpp.
#pragma once
#include <cstdint>

#include "pydecode/common.h"

namespace pydecode {

// Repetition / frequency / presence penalties in place on float32 logits (batch, vocab); prompt_mask may be null.
inline void penalties_cpu(float* logits, const int32_t* counts, const bool* prompt_mask, int64_t batch,
                          int64_t vocab, const float* repetition, float repetition_val, const float* frequency,
                          float frequency_val, const float* presence, float presence_val) {
#pragma omp parallel for schedule(static) if (batch * vocab > (1 << 16))
  for (int64_t b = 0; b < batch; ++b) {
    const float rep = row_param(repetition, repetition_val, b);
    const float freq = row_param(frequency, frequency_val, b);
    const float pres = row_param(presence, presence_val, b);
    if (rep == 1.0f && freq == 0.0f && pres == 0.0f) continue;
    float* x = logits + b * vocab;
    const int32_t* c = counts + b * vocab;
    const bool* prompt = prompt_mask ? prompt_mask + b * vocab : nullptr;
    for (int64_t i = 0; i < vocab; ++i) {
      const bool generated = c[i] > 0;
      float v = x[i];
      if (rep != 1.0f && (generated || (prompt && prompt[i]))) v = v < 0.0f ? v * rep : v / rep;
      x[i] = v - (freq * static_cast<float>(c[i]) + pres * (generated ? 1.0f : 0.0f));
    }
  }
}

}  // namespace pydecode
