// The kernels' own GEMM (gemm.h's gemm_rm: oneDNN brgemm for float32, in panels) as an op,
// so that the benchmark's floor is measured on the GEMM the kernels use. Schema: gemm.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "fpmode.h"
#include "gemm.h"

namespace seqnorm {
namespace {

// c (M, N) = a (M, K) @ b (K, N) (+ c if accumulate); row-major, unit column stride.
void gemm_(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  const FlushDenormals flush;  // subnormals read and written as 0 (fpmode.h), restored on return
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "gemm_: 2-D tensors expected");
  TORCH_CHECK(a.size(1) == b.size(0) && c.size(0) == a.size(0) && c.size(1) == b.size(1),
              "gemm_: shapes ", a.sizes(), " @ ", b.sizes(), " -> ", c.sizes(), " do not match");
  TORCH_CHECK(a.stride(1) == 1 && b.stride(1) == 1 && c.stride(1) == 1,
              "gemm_: rows must be contiguous");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && b.scalar_type() == c.scalar_type(),
              "gemm_: one dtype expected");
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gemm_", [&] {
    gemm_rm<scalar_t>(a.size(0), b.size(1), a.size(1), a.data_ptr<scalar_t>(), a.stride(0),
                      b.data_ptr<scalar_t>(), b.stride(0), c.data_ptr<scalar_t>(), c.stride(0),
                      accumulate);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(seqnorm, CPU, m) { m.impl("gemm_", &gemm_); }

}  // namespace seqnorm
