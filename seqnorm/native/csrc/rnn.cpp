// Whole-sequence forward and backward of the one-gate RNNs: rnn_tanh, rnn_relu, rnn_modrelu.
//
// gi = x @ W_ih^T + b_ih for all steps is ONE GEMM up front (pooled memory, not kept), or per
// step for a narrow input (input.h, Input).
// Forward, per step: ONE GEMM (h_{t-1} @ W_hh^T straight into the output rows) and ONE fused
// pass (add gi and b_hh, the nonlinearity, write h_t to the output and the state buffer).
// Backward: one reverse walk, per step one fused pass (dL/dz, and db) and two GEMMs
// (dL/dh_{t-1} = dz @ W_hh, and dW_hh^T += h_{t-1}^T @ dz while dz is in cache; h_{t-1} is
// read back from the output); then dx, dW_ih, db_ih as one GEMM/reduction each.
// The schemas, fake shapes and autograd live in seqnorm/native/rnn.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
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

enum class Act { Tanh, Relu, ModRelu };

Act parse_mode(c10::string_view mode) {
  if (mode == "rnn_tanh") return Act::Tanh;
  if (mode == "rnn_relu") return Act::Relu;
  if (mode == "rnn_modrelu") return Act::ModRelu;
  TORCH_CHECK(false, "mode must be rnn_tanh, rnn_relu or rnn_modrelu, got ", std::string(mode));
}

template <typename T, Act A>
void forward_rows(int64_t bs, int64_t H, const T* __restrict gi, T* __restrict out,
                  T* __restrict hbuf, const T* __restrict b, const T* __restrict mb) {
  for (int64_t r = 0; r < bs; ++r) {
    const T* g = gi + r * H;
    T* o = out + r * H;  // holds h_{t-1} @ W^T on entry
    T* s = hbuf + r * H;
    #pragma GCC ivdep
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
      s[j] = h;
      o[j] = h;
    }
  }
}

template <typename T, Act A, bool HasGo>
void backward_rows(int64_t bs, int64_t H, const T* __restrict go, const T* __restrict dh_in,
                   const T* __restrict out, T* __restrict dz, T* __restrict db,
                   T* __restrict acc) {
  for (int64_t r = 0; r < bs; ++r) {
    const T* g = HasGo ? go + r * H : nullptr;
    const T* d = dh_in + r * H;
    const T* o = out + r * H;
    T* z = dz + r * H;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T dh = HasGo ? g[j] + d[j] : d[j];
      T h = o[j];
      T v;
      if constexpr (A == Act::Tanh) {
        v = dh * (T(1) - h * h);
      } else if constexpr (A == Act::Relu) {
        v = h > T(0) ? dh : T(0);
      } else {
        // h != 0 exactly where |z| + b > 0 and z != 0; there sign(h) == sign(z).
        T sg = h > T(0) ? T(1) : (h < T(0) ? T(-1) : T(0));
        v = h != T(0) ? dh : T(0);
        acc[j] += dh * sg;
      }
      z[j] = v;
      db[j] += v;
    }
  }
}

template <typename T>
void forward_step(Act act, int64_t bs, int64_t H, const T* gi, T* out, T* hbuf, const T* b,
                  const T* mb) {
  switch (act) {
    case Act::Tanh: forward_rows<T, Act::Tanh>(bs, H, gi, out, hbuf, b, mb); break;
    case Act::Relu: forward_rows<T, Act::Relu>(bs, H, gi, out, hbuf, b, mb); break;
    case Act::ModRelu: forward_rows<T, Act::ModRelu>(bs, H, gi, out, hbuf, b, mb); break;
  }
}

template <typename T, bool HasGo>
void backward_step(Act act, int64_t bs, int64_t H, const T* go, const T* dh, const T* out,
                   T* dz, T* db, T* acc) {
  switch (act) {
    case Act::Tanh: backward_rows<T, Act::Tanh, HasGo>(bs, H, go, dh, out, dz, db, acc); break;
    case Act::Relu: backward_rows<T, Act::Relu, HasGo>(bs, H, go, dh, out, dz, db, acc); break;
    case Act::ModRelu:
      backward_rows<T, Act::ModRelu, HasGo>(bs, H, go, dh, out, dz, db, acc);
      break;
  }
}

std::tuple<at::Tensor, at::Tensor> rnn_forward(
    c10::string_view mode, const at::Tensor& x, const c10::optional<at::Tensor>& w_ih,
    const c10::optional<at::Tensor>& b_ih, const at::Tensor& h0_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& extra,
    const at::Tensor& batch_sizes, bool reverse) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const Act act = parse_mode(mode);
  const Input in = input(x, w_ih, b_ih, h0_.dim() == 2 ? h0_.size(0) : 1);
  const at::Tensor gi = in.like();  // (N, H)
  check_common(gi, h0_, w_hh_, b_hh, 1);
  const at::Tensor h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = gi.size(0), B = h0.size(0), H = h0.size(1);
  TORCH_CHECK((act == Act::ModRelu) == extra.has_value(),
              "extra (modReLU's bias) must be given for rnn_modrelu and only for it");
  at::Tensor mb;
  if (extra.has_value()) {
    TORCH_CHECK(extra->dim() == 1 && extra->size(0) == H &&
                    extra->scalar_type() == gi.scalar_type(),
                "extra (modReLU's bias) must be (", H, ",) of gi's dtype, got ", extra->sizes());
    mb = extra->contiguous();
  }
  const Packed p = packed_layout(batch_sizes, N, B);
  at::Tensor out = pooled_empty({N, H}, gi.options());
  at::Tensor hbuf = h0.clone();  // (B, H): the state of every sequence; h_n at the end
  at::Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({H}, gi.options());
  const at::Tensor wT = w_hh.t().contiguous();  // (H, H): h @ W^T
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "seqnorm_rnn_forward", [&] {
    using T = scalar_t;
    const T* b = bias.data_ptr<T>();
    const T* m = mb.defined() ? mb.data_ptr<T>() : nullptr;
    T* s = hbuf.data_ptr<T>();
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? p.T - 1 - k : k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      T* po = out.data_ptr<T>() + o * H;
      gemm_rm<T>(bs, H, H, s, H, wT.data_ptr<T>(), H, po, H, false);
      forward_step<T>(act, bs, H, in.rows<T>(o, bs), po, s, b, m);
    }
  });
  return {out, hbuf};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_backward(c10::string_view mode, const c10::optional<at::Tensor>& grad_out,
             const c10::optional<at::Tensor>& grad_hn, const at::Tensor& x,
             const c10::optional<at::Tensor>& w_ih, bool has_b_ih, const at::Tensor& h0_,
             const at::Tensor& w_hh_, const at::Tensor& out_, const at::Tensor& batch_sizes,
             bool reverse) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  const Act act = parse_mode(mode);
  const at::Tensor out = out_.contiguous(), h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t N = out.size(0), B = h0.size(0), H = out.size(1);
  TORCH_CHECK(h0.size(1) == H && w_hh.size(0) == H && w_hh.size(1) == H,
              "rnn_backward: inconsistent shapes");
  const at::Tensor go = grad_output(grad_out, out);
  const Packed p = packed_layout(batch_sizes, N, B);
  const InputGrad in_grad = input_grad(x, w_ih, N, H, B, out.options());  // dL/dz = dL/dgi
  at::Tensor dh = state_grad(grad_hn, h0);
  at::Tensor hpT = scratch(out, H * B, Slot::kTransposed);  // one step's h_{t-1}^T (H, bs)
  at::Tensor dwT = at::zeros({H, H}, out.options());    // dL/dW_hh^T
  at::Tensor db = at::empty({H}, out.options());
  at::Tensor acc = at::empty({H}, out.options());       // modReLU: dL/dbias
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "seqnorm_rnn_backward", [&] {
    using T = scalar_t;
    const T* po = out.data_ptr<T>();
    const T* ph0 = h0.data_ptr<T>();
    T* pt = hpT.data_ptr<T>();
    T* pd = dh.data_ptr<T>();
    StepSums<T> sum_b(H), sum_m(H);  // db_hh, modReLU's dL/dbias
    for (int64_t k = 0; k < p.T; ++k) {
      const int64_t t = reverse ? k : p.T - 1 - k;
      const int64_t bs = p.sizes[t], o = p.off[t];
      T* pz = in_grad.rows<T>(o, bs);
      if (go.defined()) {
        backward_step<T, true>(act, bs, H, go.data_ptr<T>() + o * H, pd, po + o * H, pz,
                               sum_b.data(), sum_m.data());
      } else {
        backward_step<T, false>(act, bs, H, nullptr, pd, po + o * H, pz, sum_b.data(),
                                sum_m.data());
      }
      sum_b.flush();
      sum_m.flush();
      gemm_rm<T>(bs, H, H, pz, H, w_hh.data_ptr<T>(), H, pd, H, false);  // dL/dh_{t-1}
      add_dw_hh<T>(prev_rows(p, t, reverse), bs, H, H, po, ph0, pz, pt, dwT.data_ptr<T>());
      in_grad.step<T>(o, bs);
    }
    sum_b.into(db);
    sum_m.into(acc);
  });
  if (act != Act::ModRelu) acc = at::empty({0}, out.options());
  auto [dx, dw_ih, db_ih] = in_grad.finish(has_b_ih, db.clone());
  return {dx, dw_ih, db_ih, dh, dwT.t().contiguous(), db, acc};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) {
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace seqnorm
