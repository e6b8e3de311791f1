// What every cell's backward does the same way on its reverse walk: read grad_out and
// grad_hn, sum the bias gradients per step, and accumulate dW_hh.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "buffers.h"
#include "gemm.h"
#include "packed.h"

namespace seqnorm {

// The backward's view of grad_out: undefined when no gradient flows into the output, else
// contiguous (copied into pooled memory where it is not) with the output's shape.
inline at::Tensor grad_output(const c10::optional<at::Tensor>& grad_out, const at::Tensor& out) {
  if (!grad_out.has_value()) return at::Tensor();
  TORCH_CHECK(grad_out->sizes() == out.sizes(), "grad_out must be ", out.sizes(), ", got ",
              grad_out->sizes());
  return contiguous_pooled(*grad_out);
}

// The gradient of a final state (h_n, c_n) that the walk starts from and updates in place: a
// copy of grad, or zeros shaped like `state0` where no gradient flows in.
inline at::Tensor state_grad(const c10::optional<at::Tensor>& grad, const at::Tensor& state0) {
  return grad.has_value() ? grad->contiguous().clone() : at::zeros_like(state0);
}

// Column sums over all N rows (the bias gradients), accumulated per step in T by the fused
// passes (`step`), then added into a double total once per step: a float32 sum over
// T*B = 100k rows in one running T would drift by ~1e-5 relative.
template <typename T>
struct StepSums {
  std::vector<T> step;
  std::vector<double> total;
  explicit StepSums(int64_t n) : step(n, T(0)), total(n, 0.0) {}
  T* data() { return step.data(); }
  void flush() {
    for (size_t i = 0; i < step.size(); ++i) {
      total[i] += step[i];
      step[i] = T(0);
    }
  }
  void into(const at::Tensor& out) const {  // out: contiguous, step.size() elements of T
    T* p = out.data_ptr<T>();
    for (size_t i = 0; i < total.size(); ++i) p[i] = static_cast<T>(total[i]);
  }
};

// dW_hh^T (R, G*H) += h_{t-1}^T @ dgates for one step of bs rows: h_{t-1} (bs, R) is read back
// from the output rows (and h0, for the sequences that start here: `pr`), transposed into the
// scratch hT (R, bs), so the GEMM runs while dgates (bs, G*H) is still in cache.
template <typename T>
inline void add_dw_hh(const PrevRows& pr, int64_t bs, int64_t R, int64_t GH, const T* out,
                      const T* h0, const T* dgates, T* hT, T* dwT) {
  if (pr.n_out > 0) transpose<T>(pr.n_out, R, out + pr.out_off * R, R, hT, bs);
  if (bs > pr.n_out) transpose<T>(bs - pr.n_out, R, h0 + pr.n_out * R, R, hT + pr.n_out, bs);
  gemm_rm<T>(R, GH, bs, hT, bs, dgates, GH, dwT, GH, true);
}

}  // namespace seqnorm
