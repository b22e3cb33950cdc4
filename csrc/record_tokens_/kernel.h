// CPU kernel of record_tokens_ (the token counts the penalties read). Semantics are those of
// pydecode/ops/penalties/reference.py; the ATen adapter is cpu.cpp.
#pragma once
#include <cstdint>

namespace pydecode {

// counts[b, tokens[b]] += 1; tokens outside [0, vocab) are ignored.
inline void record_cpu(int32_t* counts, const int64_t* tokens, int64_t batch, int64_t vocab) {
  for (int64_t b = 0; b < batch; ++b) {
    if (tokens[b] >= 0 && tokens[b] < vocab) counts[b * vocab + tokens[b]] += 1;
  }
}

}  // namespace pydecode
