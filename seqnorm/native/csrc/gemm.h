// The kernels' GEMM (row-major, with leading dimensions) and a cache-friendly transpose.
#pragma once

#include <ATen/ATen.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace seqnorm {

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

}  // namespace seqnorm
