// Ops over fpmode.h for Python (seqnorm.flush_denormal, the tests): enter / exit a mode on
// every thread of torch's intra-op pool, and read the mode of each thread.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <mutex>

#include "fpmode.h"

namespace seqnorm {
namespace {

int64_t fp_enter_op(bool flush) { return static_cast<int64_t>(fp_enter(flush)); }

void fp_exit_op(int64_t id) { fp_exit(static_cast<uint64_t>(id)); }

// Whether each thread flushes: the calling thread first, then the pool's other threads.
std::vector<int64_t> fp_flushing_op() {  // 1 or 0 per thread
  std::vector<int64_t> out{fp_flushing() ? 1 : 0};
  std::mutex m;
  const std::thread::id caller = std::this_thread::get_id();
  if (at::get_num_threads() > 1 && !at::in_parallel_region()) {
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() == caller) return;
      const bool f = fp_flushing();
      std::lock_guard<std::mutex> lock(m);
      out.push_back(f ? 1 : 0);
    });
  }
  return out;
}

bool fp_supported_op() { return kFlushBits != 0; }

}  // namespace

// Defined here, not in Python: they take no tensor, so one kernel serves every backend.
TORCH_LIBRARY_FRAGMENT(seqnorm, m) {
  m.def("fp_enter(bool flush) -> int", &fp_enter_op);
  m.def("fp_exit(int id) -> ()", &fp_exit_op);
  m.def("fp_flushing() -> int[]", &fp_flushing_op);
  m.def("fp_supported() -> bool", &fp_supported_op);
}

}  // namespace seqnorm
