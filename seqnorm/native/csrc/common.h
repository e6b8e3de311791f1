// Shared helpers of seqnorm's native kernels: vectorisable exp / sigmoid / tanh, the packed
// sequence walk, and per-thread scratch buffers.
//
// The math functions are branch-free and inline, so that GCC and clang vectorise the loops
// that call them at -O3 (glibc's libmvec is used for expf only under -ffast-math, which we do
// not want). exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial of r
// (degree 7 for float, 13 for double: truncation below half an ulp), and 2^n built in the
// exponent bits. Accuracy: ~1-2 ulp in exp and sigmoid; tanh = 1 - 2 / (exp(2|x|) + 1) is
// accurate to ~1 ulp of 1 (absolute), which is what the 1e-5 / 1e-10 comparisons with torch
// need.
#pragma once

#include <ATen/ATen.h>
#include <ATen/native/CPUBlas.h>

#include "fpmode.h"

#include <cstdint>
#include <cstring>
#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

namespace seqnorm {

template <typename T>
struct ExpConst;

template <>
struct ExpConst<float> {
  using I = int32_t;
  static constexpr float lo = -87.3f, hi = 88.3f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr int mant = 23, bias = 127;
};

template <>
struct ExpConst<double> {
  using I = int64_t;
  static constexpr double lo = -708.0, hi = 709.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int mant = 52, bias = 1023;
};

template <typename T>
inline T vexp(T x) {
  using C = ExpConst<T>;
  using I = typename C::I;
  x = x < C::lo ? C::lo : x;
  x = x > C::hi ? C::hi : x;
  T t = x * C::log2e + C::shifter;  // n = round(x / ln2) in the low mantissa bits of t
  T n = t - C::shifter;
  T r = x - n * C::ln2_hi;
  r = r - n * C::ln2_lo;
  T p;
  if constexpr (std::is_same_v<T, float>) {
    p = 1.f / 5040;
    p = p * r + 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
  } else {
    p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
  }
  I ti;
  std::memcpy(&ti, &t, sizeof(T));
  // The low bits of t hold n (two's complement); shift it into the exponent field.
  I scale_bits = (ti + C::bias) << C::mant;
  T scale;
  std::memcpy(&scale, &scale_bits, sizeof(T));
  return p * scale;
}

template <typename T>
inline T vsigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

template <typename T>
inline T vtanh(T x) {
  T a = x < T(0) ? -x : x;
  T y = T(1) - T(2) / (vexp(T(2) * a) + T(1));
  return x < T(0) ? -y : y;
}

// The packed walk: step t's rows are [off[t], off[t] + sizes[t]); sizes non-increasing.
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

// A per-thread scratch tensor of at least `numel` elements of `like`'s dtype, reused across
// calls (no fresh, page-faulting memory on every call). Slot k lets one kernel hold several.
inline at::Tensor scratch(const at::Tensor& like, int64_t numel, int slot) {
  thread_local std::vector<at::Tensor> slots;
  if (slots.size() <= static_cast<size_t>(slot)) slots.resize(slot + 1);
  at::Tensor& buf = slots[slot];
  if (!buf.defined() || buf.scalar_type() != like.scalar_type() || buf.numel() < numel) {
    buf = at::empty({numel}, like.options());
  }
  return buf.narrow(0, 0, numel);
}

// An empty tensor whose memory is reused across calls of this thread: a small pool of
// buffers, each handed out again once nothing but the pool holds its storage (the caller
// freed the previous call's output, or autograd freed what it saved). Large fresh buffers
// page-fault on every touch of a new page; a training loop's outputs and saved tensors
// come back to the pool after each step, so the next step finds them mapped.
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  constexpr size_t kSlots = 16;
  thread_local std::vector<at::Tensor> pool;
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  at::Tensor* best = nullptr;
  at::Tensor* spare = nullptr;  // a free buffer too small or unusable: evicted if the pool is full
  const bool inference = c10::InferenceMode::is_enabled();
  for (auto& b : pool) {
    if (b.storage().use_count() != 1 || b.use_count() != 1) continue;
    // A buffer made under torch.inference_mode() (Lightning's validation) is an inference
    // tensor: autograd cannot save it, so outside that mode it is only ever evicted.
    const bool usable = inference || !b.is_inference();
    if (usable && b.scalar_type() == opt.dtype().toScalarType() && b.numel() >= n) {
      if (best == nullptr || b.numel() < best->numel()) best = &b;
    } else {
      spare = &b;
    }
  }
  if (best != nullptr) return best->narrow(0, 0, n).view(sizes);
  at::Tensor fresh = at::empty({n}, opt);
  if (pool.size() < kSlots) {
    pool.push_back(fresh);
  } else if (spare != nullptr) {
    *spare = fresh;
  }
  return fresh.view(sizes);
}

// C (M, N) = A (M, K) @ B (K, N) (+ C if accumulate), all row-major with leading dimensions.
// float: oneDNN's batch-reduce GEMM micro-kernel (at::native::cpublas::brgemm), JIT-compiled
// for this CPU's widest vectors and cached per shape and thread; it falls back to the BLAS
// GEMM where oneDNN cannot (no AVX2, or torch.backends.mkldnn disabled). On AVX-512 CPUs it
// runs the per-step shapes 2-2.5x faster than MKL's sgemm, which takes its generic AVX2 path
// on non-Intel CPUs. double: the BLAS GEMM through ATen.
constexpr int64_t kGemmPanel = 128;
constexpr int64_t kGemmDepth = 512;

template <typename T>
inline void gemm_rm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, N * sizeof(T));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    // In column panels and depth chunks: one call over a wide N (the 3H or 4H gates) or a deep
    // K (dh = dgates @ W_hh, K = 4H) runs up to 1.5x slower than the same work in pieces.
    const int64_t panel = N > 2 * kGemmPanel ? kGemmPanel : N;
    for (int64_t j = 0; j < N; j += panel) {
      const int64_t n = std::min(panel, N - j);
      for (int64_t k = 0; k < K; k += kGemmDepth)
        at::native::cpublas::brgemm(M, n, std::min(kGemmDepth, K - k), lda, ldb, ldc,
                                    accumulate || k > 0, A + k, B + k * ldb + j, C + j);
    }
  } else {
    const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    at::Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opt);
    at::Tensor b = at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opt);
    at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
    if (accumulate) {
      c.addmm_(a, b);
    } else {
      at::mm_out(c, a, b);
    }
  }
}

// dst (cols, rows) = src (rows, cols)^T, in 16 x 16 tiles (both fit in L1).
template <typename T>
inline void transpose(int64_t rows, int64_t cols, const T* __restrict src, int64_t lds,
                      T* __restrict dst, int64_t ldd) {
  constexpr int64_t kTile = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
    const int64_t i1 = std::min(rows, i0 + kTile);
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t j1 = std::min(cols, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * ldd + i] = src[i * lds + j];
    }
  }
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

// A contiguous tensor with t's values: t itself, or a copy into pooled memory (an expanded
// gradient, as the backward of sum() hands over, would otherwise need fresh pages).
inline at::Tensor contiguous_pooled(const at::Tensor& t) {
  if (t.is_contiguous()) return t;
  at::Tensor c = pooled_empty(t.sizes(), t.options());
  c.copy_(t);
  return c;
}

// ---- the input projection gi = x @ W_ih^T + b_ih --------------------------------------------
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
  in.buf = scratch(x, std::max<int64_t>(B, 1) * in.GH, 7);
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
  g.dgi = scratch(x, std::max<int64_t>(B, 1) * GH, 8);
  g.xT = scratch(x, std::max<int64_t>(B, 1) * x.size(1), 9);
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

inline void check_common(const at::Tensor& gi, const at::Tensor& h0, const at::Tensor& w_hh,
                         const c10::optional<at::Tensor>& b_hh, int64_t G) {
  TORCH_CHECK(gi.device().is_cpu(), "seqnorm's native kernels take CPU tensors, got gi on ",
              gi.device());
  TORCH_CHECK(gi.scalar_type() == at::kFloat || gi.scalar_type() == at::kDouble,
              "gi must be float32 or float64, got ", gi.scalar_type());
  TORCH_CHECK(gi.dim() == 2 && h0.dim() == 2 && w_hh.dim() == 2,
              "gi (N, G*H), h0 (B, H) and w_hh (G*H, H) must be 2-D, got ", gi.sizes(), ", ",
              h0.sizes(), ", ", w_hh.sizes());
  const int64_t H = h0.size(1);
  TORCH_CHECK(gi.size(1) == G * H && w_hh.size(0) == G * H && w_hh.size(1) == H,
              "shapes do not match: gi ", gi.sizes(), ", h0 ", h0.sizes(), ", w_hh ", w_hh.sizes(),
              " (expected gi (N, ", G * H, "), w_hh (", G * H, ", ", H, "))");
  TORCH_CHECK(h0.scalar_type() == gi.scalar_type() && w_hh.scalar_type() == gi.scalar_type(),
              "h0 and w_hh must have gi's dtype ", gi.scalar_type());
  if (b_hh.has_value()) {
    TORCH_CHECK(b_hh->dim() == 1 && b_hh->size(0) == G * H &&
                    b_hh->scalar_type() == gi.scalar_type(),
                "b_hh must be (", G * H, ",) of gi's dtype, got ", b_hh->sizes(), " ",
                b_hh->scalar_type());
  }
}

}  // namespace seqnorm
