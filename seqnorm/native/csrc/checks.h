// The input checks every cell's forward makes before it reads a pointer; each message names
// the argument, what was expected and what was given.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>

namespace seqnorm {

// gi (N, G*H) float32 or float64; h0 (B, R), w_hh (G*H, R), b_hh (G*H,) and, for an LSTM with
// proj_size, w_hr (R, H), all of gi's dtype and on the CPU. R is the state's width: H, or the
// LSTM's proj_size. Returns H.
inline int64_t check_common(const at::Tensor& gi, const at::Tensor& h0, const at::Tensor& w_hh,
                            const c10::optional<at::Tensor>& b_hh, int64_t G,
                            const c10::optional<at::Tensor>& w_hr = c10::nullopt) {
  TORCH_CHECK(gi.scalar_type() == at::kFloat || gi.scalar_type() == at::kDouble,
              "gi must be float32 or float64, got ", gi.scalar_type());
  const std::pair<const char*, const at::Tensor*> named[] = {
      {"gi", &gi}, {"h0", &h0}, {"w_hh", &w_hh},
      {"b_hh", b_hh.has_value() ? &*b_hh : nullptr}, {"w_hr", w_hr.has_value() ? &*w_hr : nullptr}};
  for (const auto& [name, t] : named) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->device().is_cpu(), "seqnorm's native kernels take CPU tensors, got ", name,
                " on ", t->device());
    TORCH_CHECK(t->scalar_type() == gi.scalar_type(), name, " must have gi's dtype ",
                gi.scalar_type(), ", got ", t->scalar_type());
  }
  TORCH_CHECK(gi.dim() == 2 && h0.dim() == 2 && w_hh.dim() == 2,
              "gi (N, G*H), h0 (B, R) and w_hh (G*H, R) must be 2-D, got ", gi.sizes(), ", ",
              h0.sizes(), ", ", w_hh.sizes());
  TORCH_CHECK(gi.size(1) % G == 0, "shapes do not match: gi must be (N, G*H) with G = ", G,
              " gate blocks, got ", gi.sizes());
  const int64_t H = gi.size(1) / G;
  if (w_hr.has_value()) {
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(1) == H,
                "shapes do not match: w_hr must be (P, H) with H = ", H, " (gi ", gi.sizes(),
                "), got ", w_hr->sizes());
  }
  const int64_t R = w_hr.has_value() ? w_hr->size(0) : H;
  TORCH_CHECK(h0.size(1) == R, "shapes do not match: h0 must be (B, ", R, "), got ",
              h0.sizes(), " (gi ", gi.sizes(), ": G = ", G, " gate blocks of H = ", H, ")");
  TORCH_CHECK(w_hh.size(0) == G * H && w_hh.size(1) == R, "shapes do not match: w_hh must be (",
              G * H, ", ", R, "), got ", w_hh.sizes());
  if (b_hh.has_value()) {
    TORCH_CHECK(b_hh->dim() == 1 && b_hh->size(0) == G * H,
                "shapes do not match: b_hh must be (", G * H, ",), got ", b_hh->sizes());
  }
  return H;
}

}  // namespace seqnorm
