// Whole-sequence forward and backward of the one-gate RNNs: rnn_tanh, rnn_relu, rnn_modrelu.
//
// Forward, per step: ONE GEMM (h_{t-1} @ W_hh^T straight into the output rows) and ONE fused
// pass (add gi and b_hh, the nonlinearity, write h_t to the output and the state buffer, keep
// h_{t-1} for the backward). Backward: one reverse walk, per step one fused pass (dL/dz) and
// ONE GEMM (dL/dh_{t-1} = dz @ W_hh); dL/dW_hh = dZ^T @ H_prev as one GEMM over all N rows.
// The schemas, fake shapes and autograd live in seqnorm/native/rnn.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "common.h"

namespace seqnorm {
namespace {

enum class Act { Tanh, Relu, ModRelu };

Act parse_mode(c10::string_view mode) {
  if (mode == "rnn_tanh") return Act::Tanh;
  if (mode == "rnn_relu") return Act::Relu;
  if (mode == "rnn_modrelu") return Act::ModRelu;
  TORCH_CHECK(false, "mode must be rnn_tanh, rnn_relu or rnn_modrelu, got ", std::string(mode));
}

template <typename T, Act A, bool Save>
void forward_rows(int64_t bs, int64_t H, const T* __restrict gi, T* __restrict out,
                  T* __restrict hbuf, T* __restrict hprev, const T* __restrict b,
                  const T* __restrict mb) {
  for (int64_t r = 0; r < bs; ++r) {
    const T* g = gi + r * H;
    T* o = out + r * H;  // holds h_{t-1} @ W^T on entry
    T* s = hbuf + r * H;
    T* p = Save ? hprev + r * H : nullptr;
    for (int64_t j = 0; j < H; ++j) {
      T z = g[j] + (o[j] + b[j]);
      T h;
      if constexpr (A == Act::Tanh) {
        h = vtanh(z);
      } else if constexpr (A == Act::Relu) {
        h = z > T(0) ? z : T(0);
      } else {
        T a = (z < T(0) ? -z : z) + mb[j];
        T m = a > T(0) ? a : T(0);
        h = z > T(0) ? m : (z < T(0) ? -m : T(0));
      }
      if constexpr (Save) p[j] = s[j];
      s[j] = h;
      o[j] = h;
    }
  }
}

template <typename T, Act A>
void backward_rows(int64_t bs, int64_t H, const T* __restrict go, const T* __restrict dh_in,
                   const T* __restrict out, T* __restrict dz, T* __restrict acc) {
  for (int64_t r = 0; r < bs; ++r) {
    const T* g = go + r * H;
    const T* d = dh_in + r * H;
    const T* o = out + r * H;
    T* z = dz + r * H;
    for (int64_t j = 0; j < H; ++j) {
      T dh = g[j] + d[j];
      T h = o[j];
      if constexpr (A == Act::Tanh) {
        z[j] = dh * (T(1) - h * h);
      } else if constexpr (A == Act::Relu) {
        z[j] = h > T(0) ? dh : T(0);
      } else {
        // h != 0 exactly where |z| + b > 0 and z != 0; there sign(h) == sign(z).
        T sg = h > T(0) ? T(1) : (h < T(0) ? T(-1) : T(0));
        z[j] = h != T(0) ? dh : T(0);
        acc[j] += dh * sg;
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_forward(
    c10::string_view mode, const at::Tensor& gi_, const at::Tensor& h0_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& extra,
    const at::Tensor& batch_sizes, bool reverse, bool save) {
  const Act act = parse_mode(mode);
  check_common(gi_, h0_, w_hh_, b_hh, 1);
  const at::Tensor gi = gi_.contiguous(), h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = gi.size(0), B = h0.size(0), H = h0.size(1);
  TORCH_CHECK((act == Act::ModRelu) == extra.has_value(),
              "extra (modReLU's bias) must be given for rnn_modrelu and only for it");
  at::Tensor mb;
  if (extra.has_value()) {
    TORCH_CHECK(extra->dim() == 1 && extra->size(0) == H && extra->scalar_type() == gi.scalar_type(),
                "extra (modReLU's bias) must be (", H, ",) of gi's dtype, got ", extra->sizes());
    mb = extra->contiguous();
  }
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor out = pooled_empty({N, H}, gi.options());
  at::Tensor hprev = save ? pooled_empty({N, H}, gi.options()) : at::empty({0}, gi.options());
  at::Tensor hbuf = h0.clone();  // (B, H): the state of every sequence; h_n at the end
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({H}, gi.options());
  const at::Tensor wT = w_hh.t();  // (H, H) view: h @ W^T
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "seqnorm_rnn_forward", [&] {
    using T = scalar_t;
    const T* b = bias.data_ptr<T>();
    const T* m = mb.defined() ? mb.data_ptr<T>() : nullptr;
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? p.T - 1 - k : k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      at::Tensor rows = out.narrow(0, o, bs);  // (bs, H)
      at::mm_out(rows, hbuf.narrow(0, 0, bs), wT);
      T* po = rows.data_ptr<T>();
      const T* pg = gi.data_ptr<T>() + o * H;
      T* ps = hbuf.data_ptr<T>();
      T* pp = save ? hprev.data_ptr<T>() + o * H : nullptr;
      if (save) {
        switch (act) {
          case Act::Tanh: forward_rows<T, Act::Tanh, true>(bs, H, pg, po, ps, pp, b, m); break;
          case Act::Relu: forward_rows<T, Act::Relu, true>(bs, H, pg, po, ps, pp, b, m); break;
          case Act::ModRelu: forward_rows<T, Act::ModRelu, true>(bs, H, pg, po, ps, pp, b, m); break;
        }
      } else {
        switch (act) {
          case Act::Tanh: forward_rows<T, Act::Tanh, false>(bs, H, pg, po, ps, pp, b, m); break;
          case Act::Relu: forward_rows<T, Act::Relu, false>(bs, H, pg, po, ps, pp, b, m); break;
          case Act::ModRelu: forward_rows<T, Act::ModRelu, false>(bs, H, pg, po, ps, pp, b, m); break;
        }
      }
    }
  });
  return {out, hbuf, hprev};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward(
    c10::string_view mode, const at::Tensor& grad_out_, const at::Tensor& grad_hn_,
    const at::Tensor& out_, const at::Tensor& hprev_, const at::Tensor& w_hh_,
    const at::Tensor& batch_sizes, bool reverse) {
  const Act act = parse_mode(mode);
  const at::Tensor go = grad_out_.contiguous(), out = out_.contiguous();
  const at::Tensor hprev = hprev_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = out.size(0), B = grad_hn_.size(0), H = out.size(1);
  TORCH_CHECK(go.sizes() == out.sizes() && hprev.sizes() == out.sizes() &&
                  grad_hn_.size(1) == H && w_hh.size(0) == H && w_hh.size(1) == H,
              "rnn_backward: inconsistent shapes");
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor dz = pooled_empty({N, H}, out.options());  // dL/dz = dL/dgi = dL/d(h W^T + b)
  at::Tensor dh = grad_hn_.contiguous().clone();     // (B, H): dL/dh carried back
  at::Tensor acc = at::zeros({H}, out.options());    // modReLU: dL/dbias
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "seqnorm_rnn_backward", [&] {
    using T = scalar_t;
    T* pa = acc.data_ptr<T>();
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? k : p.T - 1 - k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      const T* pg = go.data_ptr<T>() + o * H;
      const T* po = out.data_ptr<T>() + o * H;
      T* pz = dz.data_ptr<T>() + o * H;
      T* pd = dh.data_ptr<T>();
      switch (act) {
        case Act::Tanh: backward_rows<T, Act::Tanh>(bs, H, pg, pd, po, pz, pa); break;
        case Act::Relu: backward_rows<T, Act::Relu>(bs, H, pg, pd, po, pz, pa); break;
        case Act::ModRelu: backward_rows<T, Act::ModRelu>(bs, H, pg, pd, po, pz, pa); break;
      }
      at::Tensor d = dh.narrow(0, 0, bs);
      at::mm_out(d, dz.narrow(0, o, bs), w_hh);  // dL/dh_{t-1} of the rows that stepped
    }
  });
  at::Tensor dw = at::mm(dz.t(), hprev);  // (H, H): ONE GEMM over all N rows
  at::Tensor db = dz.sum(0);
  if (act != Act::ModRelu) acc = at::empty({0}, out.options());
  return {dz, dh, dw, db, acc};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace seqnorm
