// Memory the kernels reuse across calls instead of fresh, page-faulting buffers: per-thread
// scratch slots for one step's rows, and a pool for the outputs and what autograd saves.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <vector>

namespace seqnorm {

// The per-thread scratch slots of scratch(), one per role; a kernel never gives two live
// buffers one slot. Each holds one step's rows (at most B of them) and is reused across calls.
enum class Slot : int {
  kRecurrent,         // forward: h_{t-1} @ W_hh^T (bs, G*H) (GRU, LSTM; the RNN writes out)
  kGates,             // LSTM forward with no backward to come: the activated gates (bs, 4H)
  kCell,              // LSTM forward with no backward to come: c_t (bs, H)
  kUnprojected,       // LSTM forward with proj_size, no backward to come: m_t = o * tanh(c_t)
  kInput,             // forward, narrow input: gi_t = x_t @ W_ih^T + b_ih (bs, G*H)
  kRecurrentGrad,     // GRU backward: dL/d(h_{t-1} @ W_hh^T + b_hh) (bs, 3H)
  kHiddenGrad,        // LSTM backward with proj_size: dL/dh_t (bs, P)
  kUnprojectedGrad,   // LSTM backward with proj_size: dL/dm_t (bs, H)
  kTransposed,        // backward: h_{t-1}^T (R, bs) or m_t^T (H, bs), a weight gradient's GEMM
  kInputGrad,         // backward, narrow input: dL/dgi_t (bs, G*H)
  kInputTransposed,   // backward, narrow input: x_t^T (I, bs)
  kCount,
};

// A per-thread scratch tensor of at least `numel` elements of `like`'s dtype, reused across
// calls (no fresh, page-faulting memory on every call).
inline at::Tensor scratch(const at::Tensor& like, int64_t numel, Slot slot) {
  thread_local std::array<at::Tensor, static_cast<size_t>(Slot::kCount)> slots;
  at::Tensor& buf = slots[static_cast<size_t>(slot)];
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

// A contiguous tensor with t's values: t itself, or a copy into pooled memory (an expanded
// gradient, as the backward of sum() hands over, would otherwise need fresh pages).
inline at::Tensor contiguous_pooled(const at::Tensor& t) {
  if (t.is_contiguous()) return t;
  at::Tensor c = pooled_empty(t.sizes(), t.options());
  c.copy_(t);
  return c;
}

}  // namespace seqnorm
