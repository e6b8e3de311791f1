// The floating-point mode the kernels run in: subnormal floats flushed to zero.
//
// A gradient that shrinks through hundreds of steps ends below the smallest normal float
// (1.2e-38 in float32, 2.2e-308 in float64); on x86 cores every multiply or add that reads or
// writes such a subnormal number takes a microcode assist of ~100 cycles, and a training step
// full of them ran 5-15x slower (Intel Xeon, AVX-512). With flush-to-zero (FTZ: a subnormal
// result becomes 0) and denormals-are-zero (DAZ: a subnormal operand reads as 0) the same
// arithmetic runs at full speed; only values below the normal range change, to zero.
//
// FlushDenormals is an RAII guard: it sets FTZ and DAZ (aarch64: FPCR.FZ) on the calling
// thread and on every thread of torch's intra-op pool, saving each thread's own mode, and
// restores those modes when it goes out of scope, also when a TORCH_CHECK throws. Each thread
// keeps its saved modes on a small stack tagged with the guard's id, so guards nest and a pool
// thread that did not take part in one guard is never "restored" by it.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define SEQNORM_FP_X86 1
#elif defined(__aarch64__)
#define SEQNORM_FP_ARM 1
#endif

namespace seqnorm {

#if defined(SEQNORM_FP_X86)
constexpr uint64_t kFlushBits = 0x8040;  // MXCSR: FTZ (bit 15) and DAZ (bit 6)
inline uint64_t fp_get() { return _mm_getcsr(); }
inline void fp_set(uint64_t m) { _mm_setcsr(static_cast<unsigned int>(m)); }
#elif defined(SEQNORM_FP_ARM)
constexpr uint64_t kFlushBits = uint64_t(1) << 24;  // FPCR.FZ (inputs and results)
inline uint64_t fp_get() {
  uint64_t v;
  asm volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
inline void fp_set(uint64_t v) { asm volatile("msr fpcr, %0" : : "r"(v)); }
#else
constexpr uint64_t kFlushBits = 0;  // no known control register: nothing to set
inline uint64_t fp_get() { return 0; }
inline void fp_set(uint64_t) {}
#endif

// Whether this thread flushes subnormals now.
inline bool fp_flushing() { return kFlushBits != 0 && (fp_get() & kFlushBits) == kFlushBits; }

namespace fp_detail {
inline std::vector<std::pair<uint64_t, uint64_t>>& saved() {  // (guard id, mode) per thread
  thread_local std::vector<std::pair<uint64_t, uint64_t>> stack;
  return stack;
}
inline uint64_t next_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}
inline void enter_this_thread(uint64_t id, bool flush) {
  auto& st = saved();
  if (!st.empty() && st.back().first == id) return;  // this thread already entered `id`
  const uint64_t mode = fp_get();
  st.emplace_back(id, mode);
  fp_set(flush ? (mode | kFlushBits) : (mode & ~kFlushBits));
}
inline void exit_this_thread(uint64_t id) {
  auto& st = saved();
  if (st.empty() || st.back().first != id) return;  // not entered here, or already restored
  fp_set(st.back().second);
  st.pop_back();
}
// f() on the calling thread, then once on every other thread of torch's intra-op pool (the
// pool's threads are persistent, so what f sets stays set on them until changed).
template <class F>
inline void on_every_thread(const F& f) {
  f();
  if (at::get_num_threads() <= 1 || at::in_parallel_region()) return;
  const std::thread::id caller = std::this_thread::get_id();
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    if (std::this_thread::get_id() != caller) f();
  });
}
}  // namespace fp_detail

// Enter a mode on every thread (flush or not); returns the id that fp_exit takes.
inline uint64_t fp_enter(bool flush) {
  const uint64_t id = fp_detail::next_id();
  fp_detail::on_every_thread([&] { fp_detail::enter_this_thread(id, flush); });
  return id;
}

// Restore what fp_enter(id) saved, on every thread that took part in it.
inline void fp_exit(uint64_t id) {
  fp_detail::on_every_thread([&] { fp_detail::exit_this_thread(id); });
}

// Subnormals flushed for this scope, on every thread the kernel's ATen calls may use. Cheap
// when nothing needs changing (already flushing, one thread): a register read and no stack.
class FlushDenormals {
 public:
  FlushDenormals() {
    if (kFlushBits == 0 || (at::get_num_threads() <= 1 && fp_flushing())) return;
    id_ = fp_enter(true);
  }
  ~FlushDenormals() {
    if (id_ != 0) fp_exit(id_);
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  uint64_t id_ = 0;
};

}  // namespace seqnorm
