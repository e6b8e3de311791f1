// Whole-sequence LSTM (with and without proj_size) on CPU: one forward loop, one reverse loop.
//
// Per step: ONE GEMM for the gates (h_{t-1} @ W_hh^T into a preallocated view of the saved gate
// buffer), ONE fused pass over the four gates (plain loops over contiguous rows that the compiler
// vectorises; exp/sigmoid/tanh below are branch-free polynomials), and with proj_size a second
// GEMM h = m @ W_hr^T. The backward walks the sequence once in reverse (dh_{t-1} = dgates @ W_hh,
// and with proj_size dm = dh @ W_hr) and computes dW_hh (and dW_hr) as one GEMM over all N rows.
//
// Packed layout (seqnorm/native NATIVE_API): the rows of step t are [off[t], off[t] + bs[t]),
// bs non-increasing; one full state buffer (B, R) starts at h0 and only rows [0, bs[t]) step.
//
// The op schemas, fake impls and autograd live in seqnorm/native/lstm.py; only CPU kernels here.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// ---------------------------------------------------------------- vectorisable math
// exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n ln2 (Cody-Waite), p a polynomial; 2^n is
// built from the bits of the rounding sum itself (magic-number rounding), so every operation is
// plain arithmetic or a same-width bit cast that the vectoriser maps to SIMD lanes.

template <typename To, typename From>
inline To bitcast(From x) {
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}

inline float exp_v(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (bitcast<int32_t>(t) - bitcast<int32_t>(magic) + 127) << 23;
  return p * bitcast<float>(e);
}

inline double exp_v(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634074 + magic;
  const double n = t - magic;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  // Taylor to degree 13 on |r| <= ln2 / 2: truncation below 1e-17 relative
  double p = 1.0 / 6227020800.0;
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
  p = p * r * r + r + 1.0;
  const int64_t e = (bitcast<int64_t>(t) - bitcast<int64_t>(magic) + 1023) << 52;
  return p * bitcast<double>(e);
}

template <typename T>
inline T sigmoid_v(T x) {
  return T(1) / (T(1) + exp_v(-x));
}

template <typename T>
inline T tanh_v(T x) {  // (1 - e^{-2x}) / (1 + e^{-2x}); exp_v clamps, so no overflow
  const T e = exp_v(T(-2) * x);
  return (T(1) - e) / (T(1) + e);
}

// ---------------------------------------------------------------- reusable scratch
// One grow-only buffer per purpose and dtype, kept per thread: no fresh (page-faulting) memory
// on every call for what the kernels need only while they run.

at::Tensor scratch(int slot, int64_t numel, const at::TensorOptions& opts) {
  thread_local std::vector<at::Tensor> cache[2];
  auto& c = cache[opts.dtype() == at::kDouble ? 1 : 0];
  if (static_cast<int64_t>(c.size()) <= slot) c.resize(slot + 1);
  if (!c[slot].defined() || c[slot].numel() < numel) c[slot] = at::empty({numel}, opts);
  return c[slot].narrow(0, 0, numel);
}

enum Slot { kZeroBias = 0, kDm = 1, kDh = 2, kHprev = 3, kGradOut = 4, kGatesStep = 5, kCsStep = 6, kMStep = 7 };

// The big outputs (out, the saved gates and cell states, the gradient of gi) come from a
// second pool: a buffer is handed out again only once nothing but the pool holds its storage
// (the previous call's graph and outputs are gone), else a fresh one takes its place. A fresh
// 300 MB buffer page-faults on first touch at every call; that, not the arithmetic, was half
// of the forward's time at T=784, B=128, H=128.
at::Tensor pooled(int slot, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  thread_local std::vector<at::Tensor> pool[2];
  auto& p = pool[opts.dtype() == at::kDouble ? 1 : 0];
  int64_t numel = 1;
  for (auto d : sizes) numel *= d;
  if (static_cast<int64_t>(p.size()) <= slot) p.resize(slot + 1);
  auto& buf = p[slot];
  if (!buf.defined() || buf.storage().use_count() != 1 || buf.numel() < numel)
    buf = at::empty({std::max<int64_t>(numel, buf.defined() ? buf.numel() : 0)}, opts);
  return buf.narrow(0, 0, numel).view(sizes);
}

enum Pooled { kOut = 0, kGates = 1, kCs = 2, kM = 3, kDgi = 4 };

struct Steps {
  std::vector<int64_t> bs, off;
  int64_t T = 0, N = 0;
  explicit Steps(const at::Tensor& batch_sizes) {
    TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong,
                "batch_sizes must be a CPU int64 tensor");
    auto b = batch_sizes.contiguous();
    T = b.numel();
    const int64_t* p = b.data_ptr<int64_t>();
    bs.assign(p, p + T);
    off.resize(T);
    for (int64_t t = 0; t < T; ++t) {
      TORCH_CHECK(bs[t] > 0 && (t == 0 || bs[t] <= bs[t - 1]),
                  "batch_sizes must be positive and non-increasing, got ", batch_sizes);
      off[t] = N;
      N += bs[t];
    }
  }
  // the step that ran before step t in the walk's direction (-1: none; the state came from h0)
  int64_t prev(int64_t t, bool reverse) const {
    return reverse ? (t + 1 < T ? t + 1 : -1) : t - 1;
  }
};

// x @ w^T for the per-step GEMMs (w (out, in) contiguous). float32 goes through oneDNN's
// matmul (torch's mkldnn::_linear_pointwise, the GEMM behind torch's own CPU LSTM): on CPUs
// where MKL's sgemm is slow for these small shapes (AMD: 2.4x slower at 128 x 128 x 512) it is
// the difference between beating torch's LSTM and not. That op returns its own tensor (from
// the heap, the same chunk every step); float64, or a torch built without oneDNN, writes
// into `out` with at::mm_out. Returns the tensor that holds the product.
at::Tensor gemm_nt(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  static const c10::optional<c10::OperatorHandle> onednn =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  // oneDNN's per-call setup (~tens of us) only pays off on GEMMs of a few M multiply-adds
  const bool big = x.size(0) * x.size(1) * w.size(0) >= (int64_t(1) << 21);
  if (onednn && big && x.scalar_type() == at::kFloat) {
    std::vector<c10::IValue> stack{x, w, c10::IValue(), std::string("none"),
                                   c10::List<c10::optional<at::Scalar>>(), std::string("")};
    onednn->callBoxed(&stack);
    return stack[0].toTensor();
  }
  at::mm_out(out, x, w.t());
  return out;
}

template <typename T>
void forward_gates(int64_t bs, int64_t H, const T* __restrict__ gi, const T* hw, T* g,
                   const T* __restrict__ bias, T* __restrict__ c_state, T* __restrict__ cs,
                   T* __restrict__ m) {
  // hw: (bs, 4H) = h @ W_hh^T (may be g itself); g: the activated gates (i, f, g, o) on exit
  at::parallel_for(0, bs, std::max<int64_t>(1, 16384 / (4 * H)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* __restrict__ x = gi + b * 4 * H;
      const T* z = hw + b * 4 * H;
      T* y = g + b * 4 * H;  // may alias z: element j is read, then written
      T* __restrict__ c = c_state + b * H;
      T* __restrict__ cr = cs + b * H;
      T* __restrict__ mr = m + b * H;
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        const T ig = sigmoid_v(z[j] + x[j] + bias[j]);
        const T fg = sigmoid_v(z[H + j] + x[H + j] + bias[H + j]);
        const T gg = tanh_v(z[2 * H + j] + x[2 * H + j] + bias[2 * H + j]);
        const T og = sigmoid_v(z[3 * H + j] + x[3 * H + j] + bias[3 * H + j]);
        const T cn = fg * c[j] + ig * gg;
        y[j] = ig;
        y[H + j] = fg;
        y[2 * H + j] = gg;
        y[3 * H + j] = og;
        c[j] = cn;
        cr[j] = cn;
        mr[j] = og * tanh_v(cn);
      }
    }
  });
}

template <typename T>
void backward_gates(int64_t bs, int64_t H, const T* __restrict__ g, const T* __restrict__ cs,
                    const T* __restrict__ dm_a, const T* __restrict__ dm_b,
                    const T* const* __restrict__ c_prev, T* __restrict__ dc_state,
                    T* __restrict__ dg) {
  // dm = dm_a + dm_b (dm_b may be null): dL/d(o * tanh(c)); dg (bs, 4H): dL/d(pre-activations)
  at::parallel_for(0, bs, std::max<int64_t>(1, 16384 / (4 * H)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* __restrict__ a = g + b * 4 * H;
      const T* __restrict__ cr = cs + b * H;
      const T* __restrict__ cp = c_prev[b];
      const T* __restrict__ da = dm_a + b * H;
      const T* __restrict__ db = dm_b ? dm_b + b * H : nullptr;
      T* __restrict__ dc = dc_state + b * H;
      T* __restrict__ d = dg + b * 4 * H;
      if (db) {
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const T ig = a[j], fg = a[H + j], gg = a[2 * H + j], og = a[3 * H + j];
          const T tc = tanh_v(cr[j]);
          const T dmj = da[j] + db[j];
          const T dcj = dc[j] + dmj * og * (T(1) - tc * tc);
          d[j] = dcj * gg * ig * (T(1) - ig);
          d[H + j] = dcj * cp[j] * fg * (T(1) - fg);
          d[2 * H + j] = dcj * ig * (T(1) - gg * gg);
          d[3 * H + j] = dmj * tc * og * (T(1) - og);
          dc[j] = dcj * fg;
        }
      } else {
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          const T ig = a[j], fg = a[H + j], gg = a[2 * H + j], og = a[3 * H + j];
          const T tc = tanh_v(cr[j]);
          const T dmj = da[j];
          const T dcj = dc[j] + dmj * og * (T(1) - tc * tc);
          d[j] = dcj * gg * ig * (T(1) - ig);
          d[H + j] = dcj * cp[j] * fg * (T(1) - fg);
          d[2 * H + j] = dcj * ig * (T(1) - gg * gg);
          d[3 * H + j] = dmj * tc * og * (T(1) - og);
          dc[j] = dcj * fg;
        }
      }
    }
  });
}

void check_inputs(const at::Tensor& gi, const at::Tensor& h0, const at::Tensor& c0,
                  const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_hh,
                  const c10::optional<at::Tensor>& w_hr) {
  TORCH_CHECK(gi.dim() == 2 && gi.size(1) % 4 == 0, "gi must be (N, 4H), got ", gi.sizes());
  const int64_t H = gi.size(1) / 4;
  const int64_t R = w_hr.has_value() && w_hr->defined() ? w_hr->size(0) : H;
  TORCH_CHECK(h0.dim() == 2 && h0.size(1) == R, "h0 must be (B, ", R, "), got ", h0.sizes());
  TORCH_CHECK(c0.dim() == 2 && c0.size(1) == H && c0.size(0) == h0.size(0), "c0 must be (",
              h0.size(0), ", ", H, "), got ", c0.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H && w_hh.size(1) == R, "w_hh must be (",
              4 * H, ", ", R, "), got ", w_hh.sizes());
  if (b_hh.has_value() && b_hh->defined())
    TORCH_CHECK(b_hh->dim() == 1 && b_hh->size(0) == 4 * H, "b_hh must be (", 4 * H,
                ",), got ", b_hh->sizes());
  if (w_hr.has_value() && w_hr->defined())
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(1) == H, "w_hr must be (P, ", H, "), got ",
                w_hr->sizes());
  for (const at::Tensor* t : {&gi, &h0, &c0, &w_hh})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == gi.scalar_type(),
                "lstm_forward: every tensor must be on the CPU with gi's dtype");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& gi_, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& w_hr_,
    const at::Tensor& batch_sizes, bool reverse, bool save) {
  check_inputs(gi_, h0, c0, w_hh_, b_hh, w_hr_);
  const Steps s(batch_sizes);
  TORCH_CHECK(s.N == gi_.size(0), "gi has ", gi_.size(0), " rows but batch_sizes sum to ", s.N);
  TORCH_CHECK(s.bs[0] == h0.size(0), "h0 has ", h0.size(0), " rows but batch_sizes[0] is ",
              s.bs[0]);
  const bool proj = w_hr_.has_value() && w_hr_->defined();
  const auto gi = gi_.contiguous();
  const auto w_hh = w_hh_.contiguous();  // (4H, R)
  const int64_t H = gi.size(1) / 4, B = h0.size(0), N = s.N;
  const int64_t R = proj ? w_hr_->size(0) : H;
  const auto opts = gi.options();

  auto out = pooled(kOut, {N, R}, opts);
  auto h_state = h0.contiguous().clone();  // becomes h_n
  auto c_state = c0.contiguous().clone();  // becomes c_n
  // save=false (no graph will be built): gates, cell states and m live in per-step scratch
  auto gates = save ? pooled(kGates, {N, 4 * H}, opts) : scratch(kGatesStep, B * 4 * H, opts);
  auto cs = save ? pooled(kCs, {N, H}, opts) : scratch(kCsStep, B * H, opts);
  auto m = !proj ? at::empty({0}, opts)
           : save ? pooled(kM, {N, H}, opts) : scratch(kMStep, B * H, opts);
  const int64_t so = save ? 1 : 0;  // row offsets into the saved buffers: o, or 0 in scratch
  at::Tensor w_hr = proj ? w_hr_->contiguous() : at::Tensor();  // (P, H)
  at::Tensor bias = (b_hh.has_value() && b_hh->defined())
                        ? b_hh->contiguous()
                        : scratch(kZeroBias, 4 * H, opts).zero_();

  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    for (int64_t k = 0; k < s.T; ++k) {
      const int64_t t = reverse ? s.T - 1 - k : k;
      const int64_t bs = s.bs[t], o = s.off[t];
      auto g = save ? gates.narrow(0, o, bs) : gates.narrow(0, 0, bs * 4 * H).view({bs, 4 * H});
      const auto hw = gemm_nt(h_state.narrow(0, 0, bs), w_hh, g);  // (bs, 4H)
      T* mrow = proj ? m.data_ptr<T>() + so * o * H : out.data_ptr<T>() + o * R;
      forward_gates<T>(bs, H, gi.data_ptr<T>() + o * 4 * H, hw.data_ptr<T>(), g.data_ptr<T>(),
                       bias.data_ptr<T>(), c_state.data_ptr<T>(), cs.data_ptr<T>() + so * o * H,
                       mrow);
      auto h = out.narrow(0, o, bs);
      if (proj) {
        const auto m_s = save ? m.narrow(0, o, bs) : m.narrow(0, 0, bs * H).view({bs, H});
        const auto hp = gemm_nt(m_s, w_hr, h);  // (bs, P)
        if (!hp.is_same(h)) std::memcpy(h.data_ptr<T>(), hp.data_ptr<T>(), sizeof(T) * bs * R);
      }
      std::memcpy(h_state.data_ptr<T>(), h.data_ptr<T>(), sizeof(T) * bs * R);
    }
  });
  if (!save) return {out, h_state, c_state, at::empty({0}, opts), at::empty({0}, opts),
                     at::empty({0}, opts)};
  return {out, h_state, c_state, gates, cs, m};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward(
    const at::Tensor& grad_out_, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
    const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& w_hr_, const at::Tensor& out, const at::Tensor& gates,
    const at::Tensor& cs, const at::Tensor& m, const at::Tensor& batch_sizes, bool reverse,
    bool need_bias) {
  const Steps s(batch_sizes);
  const bool proj = w_hr_.has_value() && w_hr_->defined();
  const int64_t H = gates.size(1) / 4, B = h0_.size(0), N = s.N;
  const int64_t R = proj ? w_hr_->size(0) : H;
  const auto opts = gates.options();
  TORCH_CHECK(grad_out_.sizes() == out.sizes(), "grad_out must be ", out.sizes(), ", got ",
              grad_out_.sizes());
  // out.sum().backward() hands an expanded (stride 0) gradient: copy it into a reused buffer
  const auto grad_out = grad_out_.is_contiguous()
                            ? grad_out_
                            : scratch(kGradOut, N * R, opts).view({N, R}).copy_(grad_out_);
  const auto h0 = h0_.contiguous();
  const auto c0 = c0_.contiguous();
  const auto w_hh_t = w_hh_.t().contiguous();  // (R, 4H): dh = dgates @ W_hh
  at::Tensor w_hr_t = proj ? w_hr_->t().contiguous() : at::Tensor();  // (H, P): dm = dh @ W_hr

  auto dgi = pooled(kDgi, {N, 4 * H}, opts);
  auto dh_state = grad_hn.contiguous().clone();  // becomes dh0
  auto dc_state = grad_cn.contiguous().clone();  // becomes dc0
  at::Tensor dm = proj ? scratch(kDm, B * H, opts).view({B, H}) : at::Tensor();
  at::Tensor dh_all = proj ? scratch(kDh, N * R, opts).view({N, R}) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    using T = scalar_t;
    const T* csp = cs.data_ptr<T>();
    const T* c0p = c0.data_ptr<T>();
    std::vector<const T*> c_prev(B);  // per call, not per step
    for (int64_t k = 0; k < s.T; ++k) {
      const int64_t t = reverse ? k : s.T - 1 - k;  // the forward's steps, last first
      const int64_t bs = s.bs[t], o = s.off[t], p = s.prev(t, reverse);
      const int64_t p_bs = p < 0 ? 0 : s.bs[p];
      for (int64_t b = 0; b < bs; ++b)
        c_prev[b] = b < p_bs ? csp + (s.off[p] + b) * H : c0p + b * H;
      const T* dm_a;
      const T* dm_b;
      at::Tensor dm_keep;  // holds dm_a's memory through the gate pass
      if (proj) {
        auto dh = dh_all.narrow(0, o, bs);  // (bs, P) = dh_state + grad_out
        at::add_out(dh, dh_state.narrow(0, 0, bs), grad_out.narrow(0, o, bs));
        auto dm_s = dm.narrow(0, 0, bs);
        const auto dmt = gemm_nt(dh, w_hr_t, dm_s);  // (bs, H)
        dm_a = dmt.data_ptr<T>();
        dm_keep = dmt;
        dm_b = nullptr;
      } else {
        dm_a = dh_state.data_ptr<T>();
        dm_b = grad_out.data_ptr<T>() + o * R;
      }
      backward_gates<T>(bs, H, gates.data_ptr<T>() + o * 4 * H, csp + o * H, dm_a, dm_b,
                        c_prev.data(), dc_state.data_ptr<T>(),
                        dgi.data_ptr<T>() + o * 4 * H);
      auto dh_s = dh_state.narrow(0, 0, bs);
      const auto dhp = gemm_nt(dgi.narrow(0, o, bs), w_hh_t, dh_s);  // (bs, R)
      if (!dhp.is_same(dh_s))
        std::memcpy(dh_s.data_ptr<T>(), dhp.data_ptr<T>(), sizeof(T) * bs * R);
    }
  });

  // dW_hh = dgates^T @ h_prev over all N rows
  auto dw_hh = at::empty({4 * H, R}, opts);
  const bool equal = s.bs[s.T - 1] == s.bs[0];
  if (equal) {  // padded: h_prev is h0 for one block of B rows and out shifted by B for the rest
    const int64_t first = reverse ? N - B : 0;  // the rows whose h_prev is h0
    at::mm_out(dw_hh, dgi.narrow(0, first, B).t(), h0);
    if (N > B) {
      auto dg_rest = dgi.narrow(0, reverse ? 0 : B, N - B);
      auto h_rest = out.narrow(0, reverse ? B : 0, N - B);
      dw_hh.addmm_(dg_rest.t(), h_rest);
    }
  } else {  // packed: gather h_prev (N, R) into a reused buffer, then one GEMM
    auto hprev = scratch(kHprev, N * R, opts).view({N, R});
    const int64_t esz = out.element_size();
    auto* hp = static_cast<char*>(hprev.data_ptr());
    const auto* op = static_cast<const char*>(out.data_ptr());
    const auto* h0p = static_cast<const char*>(h0.data_ptr());
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t p = s.prev(t, reverse), bs = s.bs[t];
      const int64_t from_out = p < 0 ? 0 : std::min(bs, s.bs[p]);
      if (from_out) std::memcpy(hp + s.off[t] * R * esz, op + s.off[p] * R * esz, from_out * R * esz);
      if (bs > from_out)
        std::memcpy(hp + (s.off[t] + from_out) * R * esz, h0p + from_out * R * esz,
                    (bs - from_out) * R * esz);
    }
    at::mm_out(dw_hh, dgi.t(), hprev);
  }
  auto db_hh = need_bias ? dgi.sum(0) : at::empty({0}, opts);
  auto dw_hr = proj ? at::mm(dh_all.t(), m) : at::empty({0}, opts);  // (P, H)
  return {dgi, dh_state, dc_state, dw_hh, db_hh, dw_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}
