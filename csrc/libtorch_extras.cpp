// Two pieces of libtorch's C++ API that tch does not expose:
// - pinning host memory with `Tensor::pin_memory()` (tch always passes the device argument, which
//   libtorch 2.11 deprecates and warns about);
// - counting the ops a piece of work dispatches: a RecordFunction observer on every aten op
//   (nested ops included), which also counts the leaves (ops with no op recorded inside them) and
//   the reads of a tensor's value by the host (`aten::_local_scalar_dense`, behind `item()`, and
//   `aten::to` to the CPU without a dtype, behind every copy to the host). Used by `snn-delays bench`, to
//   show on a CPU how many kernel launches and device syncs a GPU step would cost.
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

std::atomic<long long> ops{0}, leaves{0}, host_reads{0};
// Per thread, one flag per op being recorded: whether an op was recorded inside it.
thread_local std::vector<bool> open;
std::atomic<bool> registered{false};
// Whether only the thread that began counting is counted (`here` marks it).
std::atomic<bool> one_thread{false};
thread_local bool here = false;
at::CallbackHandle handle = 0;
// Ops by name, for telling where the count comes from.
std::mutex names_lock;
std::map<std::string, long long> by_name, reads_by_name;

// Whether the op hands a tensor's values to the host: `item()` and its kin, or a move to the CPU
// (`aten::to.dtype_layout` with a CPU device and no dtype, as `Tensor::to(kCPU)` and every copy of
// values out of a tensor make it). A dtype conversion on the CPU (`toType`, which names a dtype) is
// not one.
bool reads_host(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (std::strcmp(name, "aten::_local_scalar_dense") == 0) {
    return true;
  }
  if (std::strcmp(name, "aten::to") != 0 || std::strcmp(fn.overload_name(), "dtype_layout") != 0) {
    return false;
  }
  auto inputs = fn.inputs();
  return inputs.size() > 3 && inputs[1].isNone() && inputs[3].isDevice() && inputs[3].toDevice().is_cpu();
}

bool counted() {
  return here || !one_thread.load(std::memory_order_relaxed);
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (!counted()) {
    return nullptr;
  }
  if (!open.empty()) {
    open.back() = true;
  }
  open.push_back(false);
  ops.fetch_add(1, std::memory_order_relaxed);
  bool read = reads_host(fn);
  {
    std::lock_guard<std::mutex> guard(names_lock);
    by_name[fn.name()] += 1;
    if (read) {
      reads_by_name[fn.name()] += 1;
    }
  }
  if (read) {
    host_reads.fetch_add(1, std::memory_order_relaxed);
  }
  return nullptr;
}

void on_end(const at::RecordFunction&, at::ObserverContext*) {
  if (!counted() || open.empty()) {
    return;
  }
  if (!open.back()) {
    leaves.fetch_add(1, std::memory_order_relaxed);
  }
  open.pop_back();
}

}  // namespace

extern "C" {

// `*pinned` gets a new at::Tensor*, the pinned copy of `tensor`; 1 when libtorch cannot pin.
int snn_pin_memory(void* tensor, void** pinned) {
  try {
    *pinned = new at::Tensor(static_cast<at::Tensor*>(tensor)->pin_memory());
    return 0;
  } catch (...) {
    return 1;
  }
}

// Starts counting (from zero) every op dispatched from now on, on every thread, or on the calling
// thread only when `this_thread_only` is 1 (CPU autograd runs the backward on the calling thread).
void snn_ops_begin(int this_thread_only) {
  here = this_thread_only != 0;
  one_thread = this_thread_only != 0;
  ops = 0;
  leaves = 0;
  host_reads = 0;
  {
    std::lock_guard<std::mutex> guard(names_lock);
    by_name.clear();
    reads_by_name.clear();
  }
  if (!registered.exchange(true)) {
    handle = at::addGlobalCallback(
        at::RecordFunctionCallback(on_start, on_end).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  }
}

// Stops counting; `counts` gets the ops, the leaf ops and the host reads since `snn_ops_begin`.
void snn_ops_end(long long* counts) {
  if (registered.exchange(false)) {
    at::removeCallback(handle);
  }
  here = false;
  one_thread = false;
  counts[0] = ops;
  counts[1] = leaves;
  counts[2] = host_reads;
}

// The ops (`reads` 0) or host reads (`reads` 1) counted since `snn_ops_begin`, by name, as
// "name count" lines, into `out` (at most `capacity` bytes, NUL-terminated); returns the length the
// whole text needs.
size_t snn_ops_by_name(int reads, char* out, size_t capacity) {
  std::string text;
  {
    std::lock_guard<std::mutex> guard(names_lock);
    for (const auto& [name, count] : reads ? reads_by_name : by_name) {
      text += name + " " + std::to_string(count) + "\n";
    }
  }
  if (capacity > 0) {
    size_t n = std::min(capacity - 1, text.size());
    std::memcpy(out, text.data(), n);
    out[n] = '\0';
  }
  return text.size();
}

}  // extern "C"
