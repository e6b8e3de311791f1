// Whole-sequence LSTM (with and without proj_size) on CPU: one forward loop, one reverse loop.
//
//   i, f, g, o = sigmoid/sigmoid/tanh/sigmoid(gi + h_{t-1} @ W_hh^T + b_hh)
//   c_t = f * c_{t-1} + i * g     m_t = o * tanh(c_t)     h_t = m_t (@ W_hr^T with proj_size)
//
// gi = x @ W_ih^T + b_ih for all steps is ONE GEMM up front (pooled memory, not kept), or per
// step for a narrow input (input.h, Input).
// Forward, per step: ONE GEMM for the gates, ONE fused pass over the four gates, and with
// proj_size a second GEMM h = m @ W_hr^T. The backward walks the sequence once in reverse:
// per step one fused pass, dh_{t-1} = dgates @ W_hh, and dW_hh^T += h_{t-1}^T @ dgates
// accumulated while dgates is in cache (with proj_size also dm = dh @ W_hr and
// dW_hr^T += m^T @ dh); h_{t-1} and c_{t-1} are read back from the saved outputs.
//
// Packed layout: the rows of step t are [off[t], off[t] + bs[t]), bs non-increasing; one full
// state buffer (B, R) starts at h0 and only rows [0, bs[t]) step. Schemas etc.: lstm.py.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>

#include "backward.h"
#include "buffers.h"
#include "checks.h"
#include "fpmode.h"
#include "gemm.h"
#include "input.h"
#include "packed.h"
#include "vecmath.h"

namespace seqnorm {
namespace {

// hw: (bs, 4H) = h @ W_hh^T; g: the activated gates (i, f, g, o) on exit; c_state: c_{t-1}
// on entry, c_t on exit; cs: c_t kept; m: o * tanh(c_t) (the output rows without proj_size).
template <typename T>
void forward_gates(int64_t bs, int64_t H, const T* __restrict gi, const T* __restrict hw,
                   T* __restrict g, const T* __restrict bias, T* __restrict c_state,
                   T* __restrict cs, T* __restrict m) {
  for (int64_t b = 0; b < bs; ++b) {
    const T* x = gi + b * 4 * H;
    const T* z = hw + b * 4 * H;
    T* y = g + b * 4 * H;
    T* c = c_state + b * H;
    T* cr = cs + b * H;
    T* mr = m + b * H;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      const T ig = vsigmoid(x[j] + (z[j] + bias[j]));
      const T fg = vsigmoid(x[H + j] + (z[H + j] + bias[H + j]));
      const T gg = vtanh(x[2 * H + j] + (z[2 * H + j] + bias[2 * H + j]));
      const T og = vsigmoid(x[3 * H + j] + (z[3 * H + j] + bias[3 * H + j]));
      const T cn = fg * c[j] + ig * gg;
      y[j] = ig;
      y[H + j] = fg;
      y[2 * H + j] = gg;
      y[3 * H + j] = og;
      c[j] = cn;
      cr[j] = cn;
      mr[j] = og * vtanh(cn);
    }
  }
}

// dm = dm_a (+ dm_b if TwoDm): dL/d(o * tanh(c)); dg (bs, 4H): dL/d(pre-activations).
template <typename T, bool TwoDm>
void backward_gates(int64_t bs, int64_t H, const T* __restrict g, const T* __restrict cs,
                    const T* __restrict dm_a, const T* __restrict dm_b, const PrevRows& pr,
                    const T* cs_all, const T* c0, T* __restrict dc_state, T* __restrict dg,
                    T* __restrict db) {
  for (int64_t b = 0; b < bs; ++b) {
    const T* a = g + b * 4 * H;
    const T* cr = cs + b * H;
    const T* __restrict cp = prev_row(pr, cs_all, c0, b, H);
    const T* da = dm_a + b * H;
    const T* dbm = TwoDm ? dm_b + b * H : nullptr;
    T* dc = dc_state + b * H;
    T* d = dg + b * 4 * H;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      const T ig = a[j], fg = a[H + j], gg = a[2 * H + j], og = a[3 * H + j];
      const T tc = vtanh(cr[j]);
      const T dmj = TwoDm ? da[j] + dbm[j] : da[j];
      const T dcj = dc[j] + dmj * og * (T(1) - tc * tc);
      const T di = dcj * gg * ig * (T(1) - ig);
      const T df = dcj * cp[j] * fg * (T(1) - fg);
      const T dgg = dcj * ig * (T(1) - gg * gg);
      const T dog = dmj * tc * og * (T(1) - og);
      d[j] = di;
      d[H + j] = df;
      d[2 * H + j] = dgg;
      d[3 * H + j] = dog;
      db[j] += di;
      db[H + j] += df;
      db[2 * H + j] += dgg;
      db[3 * H + j] += dog;
      dc[j] = dcj * fg;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
    const c10::optional<at::Tensor>& b_ih, const at::Tensor& h0_, const at::Tensor& c0_,
    const at::Tensor& w_hh_, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr_, const at::Tensor& batch_sizes, bool reverse,
    bool save) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const Input in = input(x, w_ih, b_ih, h0_.dim() == 2 ? h0_.size(0) : 1);
  const at::Tensor gi = in.like();  // (N, 4H)
  const int64_t H = check_common(gi, h0_, w_hh_, b_hh, 4, w_hr_);
  TORCH_CHECK(c0_.dim() == 2 && c0_.size(0) == h0_.size(0) && c0_.size(1) == H,
              "shapes do not match: c0 must be (B, H) = (", h0_.size(0), ", ", H, "), got ",
              c0_.sizes());
  TORCH_CHECK(c0_.device().is_cpu() && c0_.scalar_type() == gi.scalar_type(),
              "c0 must be a CPU tensor of gi's dtype ", gi.scalar_type(), ", got ",
              c0_.scalar_type(), " on ", c0_.device());
  const bool proj = w_hr_.has_value();
  const int64_t B = h0_.size(0), N = gi.size(0);
  const int64_t R = proj ? w_hr_->size(0) : H;
  const Packed p = packed_layout(batch_sizes, N, B);
  const auto opts = gi.options();
  const at::Tensor wT = w_hh_.t().contiguous();                          // (R, 4H)
  const at::Tensor w_hrT = proj ? w_hr_->t().contiguous() : at::Tensor();  // (H, P)
  at::Tensor out = pooled_empty({N, R}, opts);
  at::Tensor h_state = h0_.contiguous().clone();  // becomes h_n
  at::Tensor c_state = c0_.contiguous().clone();  // becomes c_n
  // save=false (no graph will be built): gates, cell states and m live in per-step scratch
  at::Tensor gates =
      save ? pooled_empty({N, 4 * H}, opts) : scratch(gi, B * 4 * H, Slot::kGates);
  at::Tensor cs = save ? pooled_empty({N, H}, opts) : scratch(gi, B * H, Slot::kCell);
  at::Tensor m = !proj ? at::empty({0}, opts)
                 : save ? pooled_empty({N, H}, opts) : scratch(gi, B * H, Slot::kUnprojected);
  at::Tensor hw = scratch(gi, B * 4 * H, Slot::kRecurrent);  // h_{t-1} @ W_hh^T
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({4 * H}, opts);
  const int64_t so = save ? 1 : 0;  // row offsets into the saved buffers: o, or 0 in scratch

  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "seqnorm_lstm_forward", [&] {
    using T = scalar_t;
    T* hs = h_state.data_ptr<T>();
    T* q = hw.data_ptr<T>();
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? p.T - 1 - k : k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      gemm_rm<T>(bs, 4 * H, R, hs, R, wT.data_ptr<T>(), 4 * H, q, 4 * H, false);
      T* ho = out.data_ptr<T>() + o * R;
      T* mrow = proj ? m.data_ptr<T>() + so * o * H : ho;
      forward_gates<T>(bs, H, in.rows<T>(o, bs), q,
                       gates.data_ptr<T>() + so * o * 4 * H, bias.data_ptr<T>(),
                       c_state.data_ptr<T>(), cs.data_ptr<T>() + so * o * H, mrow);
      if (proj) gemm_rm<T>(bs, R, H, mrow, H, w_hrT.data_ptr<T>(), R, ho, R, false);
      std::memcpy(hs, ho, sizeof(T) * bs * R);
    }
  });
  if (!save) {
    const at::Tensor none = at::empty({0}, opts);
    return {out, h_state, c_state, none, none, none};
  }
  return {out, h_state, c_state, gates, cs, m};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
lstm_backward(const c10::optional<at::Tensor>& grad_out, const c10::optional<at::Tensor>& grad_hn,
              const c10::optional<at::Tensor>& grad_cn, const at::Tensor& x,
              const c10::optional<at::Tensor>& w_ih, bool has_b_ih, const at::Tensor& h0_,
              const at::Tensor& c0_, const at::Tensor& w_hh_,
              const c10::optional<at::Tensor>& w_hr_, const at::Tensor& out_,
              const at::Tensor& gates_, const at::Tensor& cs_, const at::Tensor& m_,
              const at::Tensor& batch_sizes, bool reverse, bool need_bias) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const bool proj = w_hr_.has_value();
  const at::Tensor gates = gates_.contiguous(), cs = cs_.contiguous(), out = out_.contiguous();
  const at::Tensor m = m_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const int64_t H = gates.size(1) / 4, B = h0.size(0), N = gates.size(0);
  const int64_t R = proj ? w_hr_->size(0) : H;
  const auto opts = gates.options();
  TORCH_CHECK(out.size(0) == N && out.size(1) == R && cs.size(0) == N && cs.size(1) == H &&
                  w_hh_.size(0) == 4 * H && w_hh_.size(1) == R && (!proj || m.size(0) == N),
              "lstm_backward: inconsistent shapes (were the gates saved? save=True)");
  const at::Tensor go = grad_output(grad_out, out);
  const Packed p = packed_layout(batch_sizes, N, B);
  const at::Tensor w_hh = w_hh_.contiguous();                      // (4H, R)
  const at::Tensor w_hr = proj ? w_hr_->contiguous() : at::Tensor();  // (P, H)

  const InputGrad in_grad = input_grad(x, w_ih, N, 4 * H, B, opts);
  at::Tensor dh_state = state_grad(grad_hn, h0);
  at::Tensor dc_state = state_grad(grad_cn, c0);
  at::Tensor dwT = at::zeros({R, 4 * H}, opts);                   // dL/dW_hh^T
  at::Tensor dw_hrT = proj ? at::zeros({H, R}, opts) : at::Tensor();  // dL/dW_hr^T
  at::Tensor db = at::empty({4 * H}, opts);
  at::Tensor dh = scratch(out, B * R, Slot::kHiddenGrad);       // proj: dL/dh_t (bs, P)
  at::Tensor dm = scratch(out, B * H, Slot::kUnprojectedGrad);  // proj: dL/dm_t (bs, H)
  at::Tensor tT = scratch(out, B * std::max(R, H), Slot::kTransposed);  // h_{t-1}^T or m_t^T
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "seqnorm_lstm_backward", [&] {
    using T = scalar_t;
    const T* po = out.data_ptr<T>();
    const T* pcs = cs.data_ptr<T>();
    const T* ph0 = h0.data_ptr<T>();
    const T* pc0 = c0.data_ptr<T>();
    T* pdh = dh_state.data_ptr<T>();
    T* pt = tT.data_ptr<T>();
    StepSums<T> sum_b(4 * H);  // db_hh (= db_ih: dgi is dgates)
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? k : p.T - 1 - k;  // the forward's steps, last first
      const int64_t bs = p.sizes[t], o = p.off[t];
      const PrevRows pr = prev_rows(p, t, reverse);
      T* dg = in_grad.rows<T>(o, bs);
      if (proj) {
        T* d = dh.data_ptr<T>();  // dh_t = grad_out + dh_state, (bs, P)
        const T* g = go.defined() ? go.data_ptr<T>() + o * R : nullptr;
        if (g != nullptr) {
          for (int64_t i = 0; i < bs * R; ++i) d[i] = g[i] + pdh[i];
        } else {
          std::memcpy(d, pdh, sizeof(T) * bs * R);
        }
        gemm_rm<T>(bs, H, R, d, R, w_hr.data_ptr<T>(), H, dm.data_ptr<T>(), H, false);
        const T* mt = m.data_ptr<T>() + o * H;  // dW_hr^T (H, P) += m_t^T @ dh_t
        transpose<T>(bs, H, mt, H, pt, bs);
        gemm_rm<T>(H, R, bs, pt, bs, d, R, dw_hrT.data_ptr<T>(), R, true);
        backward_gates<T, false>(bs, H, gates.data_ptr<T>() + o * 4 * H, pcs + o * H,
                                 dm.data_ptr<T>(), nullptr, pr, pcs, pc0, dc_state.data_ptr<T>(),
                                 dg, sum_b.data());
      } else if (go.defined()) {
        backward_gates<T, true>(bs, H, gates.data_ptr<T>() + o * 4 * H, pcs + o * H, pdh,
                                go.data_ptr<T>() + o * R, pr, pcs, pc0, dc_state.data_ptr<T>(),
                                dg, sum_b.data());
      } else {
        backward_gates<T, false>(bs, H, gates.data_ptr<T>() + o * 4 * H, pcs + o * H, pdh,
                                 nullptr, pr, pcs, pc0, dc_state.data_ptr<T>(), dg,
                                 sum_b.data());
      }
      sum_b.flush();
      gemm_rm<T>(bs, R, 4 * H, dg, 4 * H, w_hh.data_ptr<T>(), R, pdh, R, false);
      add_dw_hh<T>(pr, bs, R, 4 * H, po, ph0, dg, pt, dwT.data_ptr<T>());
      in_grad.step<T>(o, bs);
    }
    sum_b.into(db);
  });
  auto [dx, dw_ih, db_ih] = in_grad.finish(has_b_ih, db);  // dgi = dgates
  const at::Tensor none = at::empty({0}, opts);
  return {dx, dw_ih, db_ih, dh_state, dc_state, dwT.t().contiguous(), need_bias ? db.clone() : none,
          proj ? dw_hrT.t().contiguous() : none};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace seqnorm
