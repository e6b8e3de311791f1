// The input projection gi = x @ W_ih^T + b_ih inside the ops: the forward's view of it
// (Input) and the backward's (InputGrad), up front or per step.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "buffers.h"
#include "gemm.h"

namespace seqnorm {

// A wide input (I > kStepInput) is projected for all N rows as ONE GEMM up front, into pooled
// memory. A narrow one (sequential MNIST's I = 1, any I <= kStepInput) is projected per step,
// right before the step reads it, into a (B, G*H) scratch that stays in cache: the N x G*H
// projections then never travel through main memory (at T=784, B=128, H=128, I=1 that is
// 205 MB for an LSTM, written and read back once forward and twice backward; measured, the
// up-front GEMM alone took 15 ms of an LSTM forward's 100). Without w_ih, x is gi (N, G*H).
constexpr int64_t kStepInput = 16;

inline void check_projection(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                             const c10::optional<at::Tensor>& b_ih) {
  TORCH_CHECK(x.dim() == 2 && w_ih->dim() == 2 && w_ih->size(1) == x.size(1),
              "x (N, I) and w_ih (G*H, I) must be 2-D with the same I, got x ", x.sizes(),
              ", w_ih ", w_ih->sizes());
  TORCH_CHECK(w_ih->scalar_type() == x.scalar_type() &&
                  (!b_ih.has_value() || (b_ih->scalar_type() == x.scalar_type() &&
                                         b_ih->dim() == 1 && b_ih->size(0) == w_ih->size(0))),
              "w_ih and b_ih must have x's dtype ", x.scalar_type(), " and b_ih the shape (",
              w_ih->size(0), ",)");
}

inline bool per_step_input(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih) {
  return w_ih.has_value() && x.dim() == 2 && x.size(1) <= kStepInput;
}

// The projection of every step as one GEMM into pooled memory (x itself without w_ih).
inline at::Tensor project(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                          const c10::optional<at::Tensor>& b_ih) {
  if (!w_ih.has_value()) return x.contiguous();
  check_projection(x, w_ih, b_ih);
  at::Tensor gi = pooled_empty({x.size(0), w_ih->size(0)}, x.options());
  if (b_ih.has_value()) {
    at::addmm_out(gi, *b_ih, x, w_ih->t());
  } else {
    at::mm_out(gi, x, w_ih->t());
  }
  return gi;
}

// The forward's view of gi: rows(off, bs) are the projections of rows [off, off + bs), from
// the up-front GEMM or computed on the spot (per step) into the scratch `buf`.
struct Input {
  at::Tensor gi;                // (N, G*H) up front; undefined when per step
  at::Tensor x, wT, b, buf;     // per step: x (N, I), W_ih^T (I, G*H), b_ih or undefined, (B, G*H)
  int64_t N = 0, GH = 0;

  bool per_step() const { return !gi.defined(); }
  // An (N, G*H) tensor of gi's dtype and device for the kernels' shape checks.
  at::Tensor like() const { return per_step() ? buf.new_empty({1, 1}).expand({N, GH}) : gi; }

  template <typename T>
  const T* rows(int64_t off, int64_t bs) const {
    if (!per_step()) return gi.data_ptr<T>() + off * GH;
    const int64_t I = x.size(1);
    T* out = buf.data_ptr<T>();
    gemm_rm<T>(bs, GH, I, x.data_ptr<T>() + off * I, I, wT.data_ptr<T>(), GH, out, GH, false);
    if (b.defined()) {
      const T* __restrict pb = b.data_ptr<T>();
      for (int64_t r = 0; r < bs; ++r) {
        T* __restrict o = out + r * GH;
        #pragma GCC ivdep
        for (int64_t j = 0; j < GH; ++j) o[j] += pb[j];
      }
    }
    return out;
  }
};

inline Input input(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                   const c10::optional<at::Tensor>& b_ih, int64_t B) {
  Input in;
  if (!per_step_input(x, w_ih)) {
    in.gi = project(x, w_ih, b_ih);
    in.N = in.gi.size(0);
    in.GH = in.gi.dim() == 2 ? in.gi.size(1) : 0;
    return in;
  }
  check_projection(x, w_ih, b_ih);
  in.N = x.size(0);
  in.GH = w_ih->size(0);
  in.x = x.contiguous();
  in.wT = w_ih->t().contiguous();
  if (b_ih.has_value()) in.b = b_ih->contiguous();
  in.buf = scratch(x, std::max<int64_t>(B, 1) * in.GH, Slot::kInput);
  return in;
}

// The backward's side of it: the kernels write dL/dgi of a step to rows(off, bs) and call
// step(off, bs) once done with them. Up front, dgi (N, G*H) is kept and finish() takes dx and
// dW_ih as one GEMM each over all N rows; per step, dx_t = dgi_t @ W_ih and
// dW_ih^T += x_t^T @ dgi_t are taken while dgi_t is in cache and only (B, G*H) is kept.
// db_ih is the column sums of dgi, which the kernels accumulate during their walk.
struct InputGrad {
  bool each = false;
  at::Tensor dgi, x, w_ih, xT, dx, dwT;
  int64_t GH = 0;

  template <typename T>
  T* rows(int64_t off, int64_t bs) const {
    return each ? dgi.data_ptr<T>() : dgi.data_ptr<T>() + off * GH;
  }
  template <typename T>
  void step(int64_t off, int64_t bs) const {
    if (!each) return;
    const int64_t I = x.size(1);
    const T* d = dgi.data_ptr<T>();
    gemm_rm<T>(bs, I, GH, d, GH, w_ih.data_ptr<T>(), I, dx.data_ptr<T>() + off * I, I, false);
    T* pt = xT.data_ptr<T>();
    transpose<T>(bs, I, x.data_ptr<T>() + off * I, I, pt, bs);
    gemm_rm<T>(I, GH, bs, pt, bs, d, GH, dwT.data_ptr<T>(), GH, true);
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor> finish(bool has_b_ih,
                                                        const at::Tensor& dgi_sum) const;
};

inline InputGrad input_grad(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                            int64_t N, int64_t GH, int64_t B, const at::TensorOptions& opts) {
  InputGrad g;
  g.GH = GH;
  g.x = x;
  if (w_ih.has_value()) g.w_ih = w_ih->contiguous();
  if (!per_step_input(x, w_ih)) {
    g.dgi = pooled_empty({N, GH}, opts);
    return g;
  }
  TORCH_CHECK(x.size(0) == N && w_ih->size(0) == GH && w_ih->size(1) == x.size(1),
              "x (", N, ", I) and w_ih (", GH, ", I) expected, got ", x.sizes(), ", ",
              w_ih->sizes());
  g.each = true;
  g.x = x.contiguous();
  g.dgi = scratch(x, std::max<int64_t>(B, 1) * GH, Slot::kInputGrad);
  g.xT = scratch(x, std::max<int64_t>(B, 1) * x.size(1), Slot::kInputTransposed);
  g.dx = pooled_empty({N, x.size(1)}, opts);
  g.dwT = at::zeros({x.size(1), GH}, opts);
  return g;
}

// The input projection's gradients (dx, dw_ih, db_ih). Up front: dx and dw_ih one GEMM each
// over all N rows; without w_ih, dx is dgi itself.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> InputGrad::finish(
    bool has_b_ih, const at::Tensor& dgi_sum) const {
  const at::Tensor none = at::empty({0}, dgi.options());
  if (each) return {dx, dwT.t().contiguous(), has_b_ih ? dgi_sum : none};
  if (!w_ih.defined()) return {dgi, none, none};
  at::Tensor dxa = pooled_empty({x.size(0), x.size(1)}, x.options());
  at::mm_out(dxa, dgi, w_ih);
  at::Tensor dw = at::mm(dgi.t(), x.contiguous());
  return {dxa, dw, has_b_ih ? dgi_sum : none};
}

}  // namespace seqnorm
