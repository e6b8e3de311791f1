// The packed walk over a PackedSequence's rows, step by step, and where each step reads its
// previous state from.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace seqnorm {

// Step t's rows are [off[t], off[t] + sizes[t]); sizes non-increasing, sizes[0] = B.
struct Packed {
  std::vector<int64_t> sizes, off;
  int64_t T = 0, B = 0, N = 0;
};

inline Packed packed_layout(const at::Tensor& batch_sizes, int64_t N, int64_t B) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.dim() == 1,
              "batch_sizes must be a 1-D CPU int64 tensor, got ", batch_sizes.scalar_type(), " ",
              batch_sizes.sizes(), " on ", batch_sizes.device());
  Packed p;
  p.T = batch_sizes.size(0);
  p.B = B;
  auto bs = batch_sizes.contiguous();
  const int64_t* s = bs.data_ptr<int64_t>();
  p.sizes.assign(s, s + p.T);
  p.off.resize(p.T);
  int64_t acc = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    TORCH_CHECK(s[t] > 0 && s[t] <= B && (t == 0 || s[t] <= s[t - 1]),
                "batch_sizes must be positive, non-increasing and at most B=", B,
                " (batch_sizes[0] must equal h0.size(0)); got ", s[t], " at t=", t);
    p.off[t] = acc;
    acc += s[t];
  }
  TORCH_CHECK(p.T == 0 || s[0] == B, "batch_sizes[0] must equal h0.size(0)=", B, ", got ", s[0]);
  TORCH_CHECK(acc == N, "the batch sizes must sum to gi.size(0)=", N, ", got ", acc);
  p.N = N;
  return p;
}

// The state every step starts from, as row segments (no copy of h_{t-1} is kept): forward,
// step t reads step t-1's output rows (t = 0: h0); in reverse, step t reads step t+1's output
// for the rows that also ran there and h0 for the sequences whose last step is t.
struct PrevRows {
  int64_t n_out;   // rows [0, n_out) come from out at row offset `out_off`
  int64_t out_off;
};

inline PrevRows prev_rows(const Packed& p, int64_t t, bool reverse) {
  if (!reverse) return t == 0 ? PrevRows{0, 0} : PrevRows{p.sizes[t], p.off[t - 1]};
  return t == p.T - 1 ? PrevRows{0, 0} : PrevRows{p.sizes[t + 1], p.off[t + 1]};
}

// Row r of h_{t-1} (r < sizes[t]).
template <typename T>
inline const T* prev_row(const PrevRows& pr, const T* out, const T* h0, int64_t r, int64_t H) {
  return r < pr.n_out ? out + (pr.out_off + r) * H : h0 + r * H;
}

}  // namespace seqnorm
