// Whole-sequence forward and backward of the GRU (torch's equations: b_hn inside r * (.)).
//
//   r = sigmoid(gi_r + (W_hr h + b_hr))   z = sigmoid(gi_z + (W_hz h + b_hz))
//   n = tanh(gi_n + r * (W_hn h + b_hn))  h' = n + z * (h - n)
//
// Forward, per step: ONE GEMM (h_{t-1} @ W_hh^T into a per-thread scratch) and ONE fused pass
// that writes h_t, the gates (r, z, n, W_hn h + b_hn) and h_{t-1} for the backward. Backward:
// one reverse walk, per step one fused pass and ONE GEMM (dh_{t-1} += dgh @ W_hh, in place);
// dL/dW_hh = dGH^T @ H_prev as one GEMM over all N rows. Schemas etc. in seqnorm/native/gru.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"

namespace seqnorm {
namespace {

template <typename T, bool Save>
void forward_rows(int64_t bs, int64_t H, const T* __restrict gi, const T* __restrict gh,
                  const T* __restrict b, T* __restrict out, T* __restrict hbuf,
                  T* __restrict hprev, T* __restrict gates) {
  for (int64_t row = 0; row < bs; ++row) {
    const T* g = gi + row * 3 * H;
    const T* q = gh + row * 3 * H;
    T* o = out + row * H;
    T* s = hbuf + row * H;
    T* p = Save ? hprev + row * H : nullptr;
    T* a = Save ? gates + row * 4 * H : nullptr;  // r, z, n, W_hn h + b_hn
    for (int64_t j = 0; j < H; ++j) {
      T r = vsigmoid(g[j] + (q[j] + b[j]));
      T z = vsigmoid(g[H + j] + (q[H + j] + b[H + j]));
      T hn = q[2 * H + j] + b[2 * H + j];
      T n = vtanh(g[2 * H + j] + r * hn);
      T hp = s[j];
      T h = n + z * (hp - n);
      if constexpr (Save) {
        a[j] = r;
        a[H + j] = z;
        a[2 * H + j] = n;
        a[3 * H + j] = hn;
        p[j] = hp;
      }
      s[j] = h;
      o[j] = h;
    }
  }
}

template <typename T>
void backward_rows(int64_t bs, int64_t H, const T* __restrict go, T* __restrict dh,
                   const T* __restrict gates, const T* __restrict hprev, T* __restrict dgi,
                   T* __restrict dgh) {
  for (int64_t row = 0; row < bs; ++row) {
    const T* g = go + row * H;
    T* d = dh + row * H;
    const T* a = gates + row * 4 * H;
    const T* p = hprev + row * H;
    T* di = dgi + row * 3 * H;
    T* dq = dgh + row * 3 * H;
    for (int64_t j = 0; j < H; ++j) {
      T dht = g[j] + d[j];
      T r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
      T dn = dht * (T(1) - z) * (T(1) - n * n);       // dL/d(gi_n + r * hn)
      T dz = dht * (p[j] - n) * z * (T(1) - z);        // dL/d(z's pre-activation)
      T dr = dn * hn * r * (T(1) - r);                 // dL/d(r's pre-activation)
      di[j] = dr;
      di[H + j] = dz;
      di[2 * H + j] = dn;
      dq[j] = dr;
      dq[H + j] = dz;
      dq[2 * H + j] = dn * r;
      d[j] = dht * z;  // the direct part of dL/dh_{t-1}; the GEMM adds dgh @ W_hh
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward(
    const at::Tensor& gi_, const at::Tensor& h0_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_hh, const at::Tensor& batch_sizes, bool reverse,
    bool save) {
  check_common(gi_, h0_, w_hh_, b_hh, 3);
  const at::Tensor gi = gi_.contiguous(), h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = gi.size(0), B = h0.size(0), H = h0.size(1);
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor out = pooled_empty({N, H}, gi.options());
  at::Tensor hprev = save ? pooled_empty({N, H}, gi.options()) : at::empty({0}, gi.options());
  at::Tensor gates = save ? pooled_empty({N, 4 * H}, gi.options()) : at::empty({0}, gi.options());
  at::Tensor hbuf = h0.clone();  // (B, H): the state of every sequence; h_n at the end
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({3 * H}, gi.options());
  at::Tensor gh = scratch(gi, B * 3 * H, 0).view({B, 3 * H});  // h_{t-1} @ W_hh^T
  const at::Tensor wT = w_hh.t();  // (H, 3H) view
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "seqnorm_gru_forward", [&] {
    using T = scalar_t;
    const T* b = bias.data_ptr<T>();
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? p.T - 1 - k : k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      at::Tensor q = gh.narrow(0, 0, bs);
      at::mm_out(q, hbuf.narrow(0, 0, bs), wT);
      T* pp = save ? hprev.data_ptr<T>() + o * H : nullptr;
      T* pa = save ? gates.data_ptr<T>() + o * 4 * H : nullptr;
      auto rows = save ? forward_rows<T, true> : forward_rows<T, false>;
      rows(bs, H, gi.data_ptr<T>() + o * 3 * H, q.data_ptr<T>(), b, out.data_ptr<T>() + o * H,
           hbuf.data_ptr<T>(), pp, pa);
    }
  });
  return {out, hbuf, gates, hprev};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward(
    const at::Tensor& grad_out_, const at::Tensor& grad_hn_, const at::Tensor& w_hh_,
    const at::Tensor& gates_, const at::Tensor& hprev_, const at::Tensor& batch_sizes,
    bool reverse) {
  const at::Tensor go = grad_out_.contiguous(), gates = gates_.contiguous();
  const at::Tensor hprev = hprev_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = hprev.size(0), B = grad_hn_.size(0), H = hprev.size(1);
  TORCH_CHECK(go.sizes() == hprev.sizes() && gates.size(0) == N && gates.size(1) == 4 * H &&
                  grad_hn_.size(1) == H && w_hh.size(0) == 3 * H && w_hh.size(1) == H,
              "gru_backward: inconsistent shapes");
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor dgi = pooled_empty({N, 3 * H}, go.options());
  // dL/d(h W_hh^T + b_hh): a per-thread workspace, read once more by the dW GEMM below.
  at::Tensor dgh = scratch(go, N * 3 * H, 1).view({N, 3 * H});
  at::Tensor dh = grad_hn_.contiguous().clone();  // (B, H): dL/dh carried back
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "seqnorm_gru_backward", [&] {
    using T = scalar_t;
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? k : p.T - 1 - k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      backward_rows<T>(bs, H, go.data_ptr<T>() + o * H, dh.data_ptr<T>(),
                       gates.data_ptr<T>() + o * 4 * H, hprev.data_ptr<T>() + o * H,
                       dgi.data_ptr<T>() + o * 3 * H, dgh.data_ptr<T>() + o * 3 * H);
      dh.narrow(0, 0, bs).addmm_(dgh.narrow(0, o, bs), w_hh);
    }
  });
  at::Tensor dw = at::mm(dgh.t(), hprev);  // (3H, H): ONE GEMM over all N rows
  at::Tensor db = dgh.sum(0);
  return {dgi, dh, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace seqnorm
