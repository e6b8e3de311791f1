// Whole-sequence forward and backward of the GRU (torch's equations: b_hn inside r * (.)).
//
//   r = sigmoid(gi_r + (W_hr h + b_hr))   z = sigmoid(gi_z + (W_hz h + b_hz))
//   n = tanh(gi_n + r * (W_hn h + b_hn))  h' = n + z * (h - n)
//
// gi = x @ W_ih^T + b_ih for all steps is ONE GEMM up front (into pooled memory, not kept for
// the backward), or per step for a narrow input (input.h, Input). Forward, per step: ONE GEMM
// (h_{t-1} @ W_hh^T) and ONE fused pass that writes h_t and the gates (r, z, n, W_hn h + b_hn)
// the backward needs; h_{t-1} is read back from the output. Backward: one reverse walk, per
// step one fused pass and two GEMMs (dh_{t-1} += dgh @ W_hh, and dW_hh^T += h_{t-1}^T @ dgh
// accumulated while dgh is in cache); then dx, dW_ih, db_ih as one GEMM/reduction each over
// all N rows. Schemas: gru.py.
#include <ATen/ATen.h>
#include <torch/library.h>

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

template <typename T, bool Save>
void forward_rows(int64_t bs, int64_t H, const T* __restrict gi, const T* __restrict gh,
                  const T* __restrict b, T* __restrict out, T* __restrict hbuf,
                  T* __restrict gates) {
  for (int64_t row = 0; row < bs; ++row) {
    const T* g = gi + row * 3 * H;
    const T* q = gh + row * 3 * H;
    T* o = out + row * H;
    T* s = hbuf + row * H;
    T* a = Save ? gates + row * 4 * H : nullptr;  // r, z, n, W_hn h + b_hn
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T r = vsigmoid(g[j] + (q[j] + b[j]));
      T z = vsigmoid(g[H + j] + (q[H + j] + b[H + j]));
      T hn = q[2 * H + j] + b[2 * H + j];
      T n = vtanh(g[2 * H + j] + r * hn);
      T h = n + z * (s[j] - n);
      if constexpr (Save) {
        a[j] = r;
        a[H + j] = z;
        a[2 * H + j] = n;
        a[3 * H + j] = hn;
      }
      s[j] = h;
      o[j] = h;
    }
  }
}

template <typename T, bool HasGo>
void backward_rows(int64_t bs, int64_t H, const T* __restrict go, T* __restrict dh,
                   const T* __restrict gates, const PrevRows& pr, const T* out, const T* h0,
                   T* __restrict dgi, T* __restrict dgh, T* __restrict db,
                   T* __restrict dbi) {
  for (int64_t row = 0; row < bs; ++row) {
    const T* g = HasGo ? go + row * H : nullptr;
    T* d = dh + row * H;
    const T* a = gates + row * 4 * H;
    const T* __restrict p = prev_row(pr, out, h0, row, H);
    T* di = dgi + row * 3 * H;
    T* dq = dgh + row * 3 * H;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T dht = HasGo ? g[j] + d[j] : d[j];
      T r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
      T dn = dht * (T(1) - z) * (T(1) - n * n);  // dL/d(gi_n + r * hn)
      T dz = dht * (p[j] - n) * z * (T(1) - z);   // dL/d(z's pre-activation)
      T dr = dn * hn * r * (T(1) - r);            // dL/d(r's pre-activation)
      T dnr = dn * r;
      di[j] = dr;
      di[H + j] = dz;
      di[2 * H + j] = dn;
      dq[j] = dr;
      dq[H + j] = dz;
      dq[2 * H + j] = dnr;
      db[j] += dr;
      db[H + j] += dz;
      db[2 * H + j] += dnr;
      dbi[2 * H + j] += dn;  // db_ih: as db_hh for r and z
      d[j] = dht * z;  // the direct part of dL/dh_{t-1}; the GEMM adds dgh @ W_hh
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_forward(
    const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
    const c10::optional<at::Tensor>& b_ih, const at::Tensor& h0_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_hh, const at::Tensor& batch_sizes, bool reverse,
    bool save) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const Input in = input(x, w_ih, b_ih, h0_.dim() == 2 ? h0_.size(0) : 1);
  const at::Tensor gi = in.like();  // (N, 3H)
  check_common(gi, h0_, w_hh_, b_hh, 3);
  const at::Tensor h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = gi.size(0), B = h0.size(0), H = h0.size(1);
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor out = pooled_empty({N, H}, gi.options());
  at::Tensor gates = save ? pooled_empty({N, 4 * H}, gi.options()) : at::empty({0}, gi.options());
  at::Tensor hbuf = h0.clone();  // (B, H): the state of every sequence; h_n at the end
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({3 * H}, gi.options());
  at::Tensor gh = scratch(gi, B * 3 * H, Slot::kRecurrent);  // h_{t-1} @ W_hh^T, (bs, 3H)
  const at::Tensor wT = w_hh.t().contiguous();    // (H, 3H)
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "seqnorm_gru_forward", [&] {
    using T = scalar_t;
    const T* b = bias.data_ptr<T>();
    T* q = gh.data_ptr<T>();
    T* s = hbuf.data_ptr<T>();
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? p.T - 1 - k : k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      gemm_rm<T>(bs, 3 * H, H, s, H, wT.data_ptr<T>(), 3 * H, q, 3 * H, false);
      auto rows = save ? forward_rows<T, true> : forward_rows<T, false>;
      rows(bs, H, in.rows<T>(o, bs), q, b, out.data_ptr<T>() + o * H, s,
           save ? gates.data_ptr<T>() + o * 4 * H : nullptr);
    }
  });
  return {out, hbuf, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward(
    const c10::optional<at::Tensor>& grad_out, const c10::optional<at::Tensor>& grad_hn,
    const at::Tensor& x, const c10::optional<at::Tensor>& w_ih, bool has_b_ih,
    const at::Tensor& h0_, const at::Tensor& w_hh_, const at::Tensor& out_,
    const at::Tensor& gates_, const at::Tensor& batch_sizes, bool reverse) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const at::Tensor out = out_.contiguous(), gates = gates_.contiguous();
  const at::Tensor h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = out.size(0), B = h0.size(0), H = out.size(1);
  TORCH_CHECK(gates.size(0) == N && gates.size(1) == 4 * H && h0.size(1) == H &&
                  w_hh.size(0) == 3 * H && w_hh.size(1) == H,
              "gru_backward: inconsistent shapes (were the gates saved? save=True)");
  const at::Tensor go = grad_output(grad_out, out);
  const Packed p = packed_layout(batch_sizes, N, B);
  const InputGrad in_grad = input_grad(x, w_ih, N, 3 * H, B, out.options());
  at::Tensor dgh = scratch(out, B * 3 * H, Slot::kRecurrentGrad);  // dL/d(h W_hh^T + b_hh)
  at::Tensor hpT = scratch(out, H * B, Slot::kTransposed);  // one step's h_{t-1}^T (H, bs)
  at::Tensor dwT = at::zeros({H, 3 * H}, out.options());  // dL/dW_hh^T
  at::Tensor db = at::empty({3 * H}, out.options());
  at::Tensor dbi = at::empty({3 * H}, out.options());  // column sums of dgi
  at::Tensor dh = state_grad(grad_hn, h0);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "seqnorm_gru_backward", [&] {
    using T = scalar_t;
    const T* po = out.data_ptr<T>();
    const T* ph0 = h0.data_ptr<T>();
    T* q = dgh.data_ptr<T>();
    T* pt = hpT.data_ptr<T>();
    StepSums<T> sum_h(3 * H), sum_i(3 * H);  // db_hh, and dgi's n-part for db_ih
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? k : p.T - 1 - k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      const PrevRows pr = prev_rows(p, t, reverse);
      auto rows = go.defined() ? backward_rows<T, true> : backward_rows<T, false>;
      rows(bs, H, go.defined() ? go.data_ptr<T>() + o * H : nullptr, dh.data_ptr<T>(),
           gates.data_ptr<T>() + o * 4 * H, pr, po, ph0, in_grad.rows<T>(o, bs), q,
           sum_h.data(), sum_i.data());
      sum_h.flush();
      sum_i.flush();
      gemm_rm<T>(bs, H, 3 * H, q, 3 * H, w_hh.data_ptr<T>(), H, dh.data_ptr<T>(), H, true);
      add_dw_hh<T>(pr, bs, H, 3 * H, po, ph0, q, pt, dwT.data_ptr<T>());
      in_grad.step<T>(o, bs);
    }
    sum_h.into(db);
    sum_i.into(dbi);
  });
  dbi.narrow(0, 0, 2 * H).copy_(db.narrow(0, 0, 2 * H));
  auto [dx, dw_ih, db_ih] = in_grad.finish(has_b_ih, dbi);
  return {dx, dw_ih, db_ih, dh, dwT.t().contiguous(), db};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace seqnorm
