// The LRU's diagonal complex scan (Orvieto et al. 2023): h_t = lambda * h_{t-1} + u_t, with
// u_t = x_t @ W^T (+ b), over a whole packed sequence, forward and backward.
//
// Complex numbers are stored as real and imaginary planes: a row of the state, of u and of the
// output is [re_0 .. re_{P-1} | im_0 .. im_{P-1}] (2P floats), lambda is (2P,) the same way. A
// step is then, per row, two contiguous loops of P multiply-adds that the compiler vectorises
// across the state (AVX-512: 16 floats a lane); rows are the batch. No GEMM per step: the
// recurrence is diagonal.
// Forward: u = x @ W^T (+ b) for all steps as ONE GEMM (not kept), then one walk over t; each
// step reads the previous step's rows of the output (h_{t-1}, in cache) and writes its own.
// Backward: one reverse walk carrying dL/dh (the adjoint, conj(lambda) * dL/dh_{t+1} plus the
// output's gradient), which is also dL/du_t; dL/dlambda = sum_t,b conj(h_{t-1}) dL/dh_t, summed
// in double; then dx, dW (and db) as one GEMM or reduction each.
// Rows are independent: with several intra-op threads each walks its own block of rows.
// The schemas, fake shapes and autograd live in seqnorm/native/lru.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#include "buffers.h"
#include "fpmode.h"

namespace seqnorm {
namespace {

// The packed walk: step t's rows are [off[t], off[t] + sizes[t]); sizes non-increasing.
struct Walk {
  std::vector<int64_t> sizes, off;
  int64_t T = 0;
};

Walk walk_of(const at::Tensor& batch_sizes, int64_t N, int64_t B) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.dim() == 1,
              "batch_sizes must be a 1-D CPU int64 tensor, got ", batch_sizes.scalar_type(), " ",
              batch_sizes.sizes(), " on ", batch_sizes.device());
  const at::Tensor bs = batch_sizes.contiguous();
  const int64_t* s = bs.data_ptr<int64_t>();
  Walk w;
  w.T = bs.size(0);
  w.sizes.assign(s, s + w.T);
  w.off.resize(w.T);
  int64_t acc = 0;
  for (int64_t t = 0; t < w.T; ++t) {
    TORCH_CHECK(s[t] > 0 && s[t] <= B && (t == 0 || s[t] <= s[t - 1]),
                "batch_sizes must be positive, non-increasing and at most B=", B, "; got ", s[t],
                " at t=", t);
    w.off[t] = acc;
    acc += s[t];
  }
  TORCH_CHECK(w.T == 0 || s[0] == B, "batch_sizes[0] must equal h0.size(0)=", B, ", got ", s[0]);
  TORCH_CHECK(acc == N, "batch_sizes must sum to the input's rows ", N, ", got ", acc);
  return w;
}

// Blocks of rows, one per task of at::parallel_for (one block on one thread).
struct Blocks {
  int64_t n = 1, rows = 0;
};

Blocks blocks_of(int64_t B) {
  Blocks b;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  b.n = std::max<int64_t>(1, std::min(threads, (B + 7) / 8));  // at least 8 rows a block
  b.rows = (B + b.n - 1) / b.n;
  return b;
}

// h = lambda * prev + u for n rows (2P planes each).
template <typename T>
void forward_rows(int64_t n, int64_t P, const T* __restrict u, const T* __restrict prev,
                  T* __restrict out, const T* __restrict lr, const T* __restrict li) {
  const int64_t W = 2 * P;
  for (int64_t r = 0; r < n; ++r) {
    const T* ur = u + r * W;
    const T* ui = ur + P;
    const T* pr = prev + r * W;
    const T* pi = pr + P;
    T* hr = out + r * W;
    T* hi = hr + P;
#pragma GCC ivdep
    for (int64_t j = 0; j < P; ++j) {
      const T a = pr[j], b = pi[j];
      hr[j] = (lr[j] * a - li[j] * b) + ur[j];
      hi[j] = (lr[j] * b + li[j] * a) + ui[j];
    }
  }
}

// d = go + dh (dL/dh_t in full, = dL/du_t); acc += conj(prev) * d; dh = conj(lambda) * d.
template <typename T, bool HasGo>
void backward_rows(int64_t n, int64_t P, const T* __restrict go, T* __restrict dh,
                   const T* __restrict prev, T* __restrict du, const T* __restrict lr,
                   const T* __restrict li, double* __restrict acc_r, double* __restrict acc_i) {
  const int64_t W = 2 * P;
  for (int64_t r = 0; r < n; ++r) {
    const T* gr = HasGo ? go + r * W : nullptr;
    const T* gi = HasGo ? gr + P : nullptr;
    T* cr = dh + r * W;
    T* ci = cr + P;
    const T* pr = prev + r * W;
    const T* pi = pr + P;
    T* dr = du + r * W;
    T* di = dr + P;
#pragma GCC ivdep
    for (int64_t j = 0; j < P; ++j) {
      const T vr = HasGo ? gr[j] + cr[j] : cr[j];
      const T vi = HasGo ? gi[j] + ci[j] : ci[j];
      dr[j] = vr;
      di[j] = vi;
      const T a = pr[j], b = pi[j];
      acc_r[j] += static_cast<double>(a * vr + b * vi);
      acc_i[j] += static_cast<double>(a * vi - b * vr);
      cr[j] = lr[j] * vr + li[j] * vi;
      ci[j] = lr[j] * vi - li[j] * vr;
    }
  }
}

void check_args(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                const c10::optional<at::Tensor>& b_ih, const at::Tensor& h0,
                const at::Tensor& lam) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu() && (dt == at::kFloat || dt == at::kDouble),
              "x must be a float32 or float64 CPU tensor, got ", dt, " on ", x.device());
  TORCH_CHECK(x.dim() == 2, "x must be 2-D (N, features), got ", x.sizes());
  TORCH_CHECK(lam.dim() == 1 && lam.size(0) % 2 == 0 && lam.scalar_type() == dt,
              "lambda must be (2P,) [real | imag] of x's dtype, got ", lam.sizes(), " ",
              lam.scalar_type());
  const int64_t W = lam.size(0);
  TORCH_CHECK(h0.dim() == 2 && h0.size(1) == W && h0.scalar_type() == dt,
              "h0 must be (B, ", W, ") of x's dtype, got ", h0.sizes(), " ", h0.scalar_type());
  if (w_ih.has_value()) {
    TORCH_CHECK(w_ih->dim() == 2 && w_ih->size(0) == W && w_ih->size(1) == x.size(1) &&
                    w_ih->scalar_type() == dt,
                "w_ih must be (", W, ", ", x.size(1), ") of x's dtype, got ", w_ih->sizes());
    TORCH_CHECK(!b_ih.has_value() || (b_ih->dim() == 1 && b_ih->size(0) == W &&
                                      b_ih->scalar_type() == dt),
                "b_ih must be (", W, ",) of x's dtype");
  } else {
    TORCH_CHECK(!b_ih.has_value(), "b_ih needs w_ih");
    TORCH_CHECK(x.size(1) == W, "without w_ih, x is u itself and must have ", W,
                " columns, got ", x.size(1));
  }
}

// u = x @ w_ih^T (+ b_ih), or x itself: (N, 2P), contiguous.
at::Tensor project(const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
                   const c10::optional<at::Tensor>& b_ih) {
  if (!w_ih.has_value()) return x.contiguous();
  if (b_ih.has_value()) return at::addmm(*b_ih, x, w_ih->t());
  return at::mm(x, w_ih->t());
}

std::tuple<at::Tensor, at::Tensor> lru_forward(const at::Tensor& x,
                                               const c10::optional<at::Tensor>& w_ih,
                                               const c10::optional<at::Tensor>& b_ih,
                                               const at::Tensor& h0_, const at::Tensor& lam_,
                                               const at::Tensor& batch_sizes) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  check_args(x, w_ih, b_ih, h0_, lam_);
  const at::Tensor u = project(x, w_ih, b_ih);  // (N, 2P)
  const at::Tensor h0 = h0_.contiguous(), lam = lam_.contiguous();
  const int64_t N = u.size(0), B = h0.size(0), W = lam.size(0), P = W / 2;
  const Walk w = walk_of(batch_sizes, N, B);
  at::Tensor out = pooled_empty({N, W}, u.options());  // reused memory: no fresh page faults
  at::Tensor hn = h0.clone();  // rows of sequences with no step keep h0 (none: sizes[0] == B)
  const Blocks blk = blocks_of(B);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "seqnorm_lru_forward", [&] {
    using T = scalar_t;
    const T* pu = u.data_ptr<T>();
    const T* p0 = h0.data_ptr<T>();
    const T* lr = lam.data_ptr<T>();
    const T* li = lr + P;
    T* po = out.data_ptr<T>();
    T* pn = hn.data_ptr<T>();
    at::parallel_for(0, blk.n, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r0 = k * blk.rows, r1 = std::min(B, r0 + blk.rows);
        for (int64_t t = 0; t < w.T && w.sizes[t] > r0; ++t) {
          const int64_t n = std::min(r1, w.sizes[t]) - r0;
          const T* prev = t == 0 ? p0 + r0 * W : po + (w.off[t - 1] + r0) * W;
          forward_rows<T>(n, P, pu + (w.off[t] + r0) * W, prev, po + (w.off[t] + r0) * W, lr,
                          li);
        }
        // h_n: each row's state at its own last step (the number of steps longer than r, - 1).
        int64_t last = w.T - 1;
        for (int64_t r = r0; r < r1; ++r) {
          while (last >= 0 && w.sizes[last] <= r) --last;
          if (last >= 0) std::memcpy(pn + r * W, po + (w.off[last] + r) * W, W * sizeof(T));
        }
      }
    });
  });
  return {out, hn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lru_backward(
    const c10::optional<at::Tensor>& grad_out, const c10::optional<at::Tensor>& grad_hn,
    const at::Tensor& x, const c10::optional<at::Tensor>& w_ih, bool has_b_ih,
    const at::Tensor& h0_, const at::Tensor& lam_, const at::Tensor& out_,
    const at::Tensor& batch_sizes) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const at::Tensor out = out_.contiguous(), h0 = h0_.contiguous(), lam = lam_.contiguous();
  const int64_t N = out.size(0), B = h0.size(0), W = lam.size(0), P = W / 2;
  TORCH_CHECK(out.dim() == 2 && out.size(1) == W && h0.size(1) == W,
              "lru_backward: inconsistent shapes");
  const at::Tensor go = grad_out.has_value() ? grad_out->contiguous() : at::Tensor();
  TORCH_CHECK(!go.defined() || go.sizes() == out.sizes(), "grad_out must be ", out.sizes(),
              ", got ", go.sizes());
  const Walk w = walk_of(batch_sizes, N, B);
  at::Tensor dh = grad_hn.has_value() ? grad_hn->contiguous().clone() : at::zeros_like(h0);
  TORCH_CHECK(dh.sizes() == h0.sizes(), "grad_hn must be ", h0.sizes(), ", got ", dh.sizes());
  at::Tensor du = pooled_empty({N, W}, out.options());  // dL/du = dL/dh_t in full
  const Blocks blk = blocks_of(B);
  std::vector<double> acc(static_cast<size_t>(blk.n * W), 0.0);  // per block: dL/dlambda
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "seqnorm_lru_backward", [&] {
    using T = scalar_t;
    const T* po = out.data_ptr<T>();
    const T* p0 = h0.data_ptr<T>();
    const T* pg = go.defined() ? go.data_ptr<T>() : nullptr;
    const T* lr = lam.data_ptr<T>();
    const T* li = lr + P;
    T* pd = dh.data_ptr<T>();
    T* pu = du.data_ptr<T>();
    at::parallel_for(0, blk.n, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r0 = k * blk.rows, r1 = std::min(B, r0 + blk.rows);
        double* ar = acc.data() + k * W;
        double* ai = ar + P;
        for (int64_t t = w.T - 1; t >= 0; --t) {
          if (w.sizes[t] <= r0) continue;
          const int64_t n = std::min(r1, w.sizes[t]) - r0, o = (w.off[t] + r0) * W;
          const T* prev = t == 0 ? p0 + r0 * W : po + (w.off[t - 1] + r0) * W;
          if (pg != nullptr) {
            backward_rows<T, true>(n, P, pg + o, pd + r0 * W, prev, pu + o, lr, li, ar, ai);
          } else {
            backward_rows<T, false>(n, P, nullptr, pd + r0 * W, prev, pu + o, lr, li, ar, ai);
          }
        }
      }
    });
  });
  at::Tensor dlam_d = at::zeros({W}, out.options().dtype(at::kDouble));
  double* pl = dlam_d.data_ptr<double>();
  for (int64_t k = 0; k < blk.n; ++k)
    for (int64_t j = 0; j < W; ++j) pl[j] += acc[k * W + j];
  const at::Tensor dlam = dlam_d.to(out.scalar_type());
  at::Tensor dx, dw, db;
  const at::Tensor none = at::empty({0}, out.options());
  if (w_ih.has_value()) {
    dx = at::mm(du, *w_ih);            // (N, I)
    dw = at::mm(du.t(), x);            // (2P, I)
    db = has_b_ih ? du.sum(0) : none;  // (2P,)
  } else {
    dx = du;
    dw = db = none;
  }
  return {dx, dw, db, dh, dlam};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("lru_forward", &lru_forward);
  m.impl("lru_backward", &lru_backward);
}

}  // namespace seqnorm
