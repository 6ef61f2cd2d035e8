// A thin C interface to libtorch's own c10d (docs/method.md, "Data-parallel training"): a
// TCPStore rendezvous, a Gloo or NCCL process group, and the two collectives training needs
// (a summing all-reduce and a broadcast) on tch tensors. Every call catches C++ exceptions and returns
// their message, so that Rust reports them as errors instead of aborting.
//
// Collectives are waited for without a timeout: for NCCL, `wait()` then only orders the current
// CUDA stream after the collective and returns at once (a timeout would make the host poll until
// the collective ends, a full sync per call), while the group's own timeout and watchdog still bound
// it. A collective that fails or times out later is reported by `snn_c10d_check`, which the caller
// runs after it has read the collectives' results. Freeing a group shuts it down (aborts it after an
// error), so that a process exits quietly.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SNN_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef SNN_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> snn_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, std::chrono::milliseconds timeout);
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  // Collectives issued since the last check, which may still fail on the device.
  std::vector<c10::intrusive_ptr<c10d::Work>> pending;
  bool failed = false;
};

void write_error(char* error, size_t capacity, const std::string& message) {
  if (capacity == 0) {
    return;
  }
  size_t n = std::min(capacity - 1, message.size());
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

template <typename F>
int guarded(char* error, size_t capacity, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    write_error(error, capacity, e.what());
  } catch (...) {
    write_error(error, capacity, "unknown C++ exception");
  }
  return 1;
}

// As `guarded`, marking the group failed on an error (it is then aborted, not shut down).
template <typename F>
int guarded_on(void* handle, char* error, size_t capacity, F&& body) {
  int status = guarded(error, capacity, body);
  if (status != 0) {
    static_cast<Group*>(handle)->failed = true;
  }
  return status;
}

#ifdef SNN_WITH_GLOO
// The Gloo device: on GLOO_SOCKET_IFNAME's interface when set, as torch.distributed does,
// otherwise on the address this host's name resolves to (loopback if it does not).
std::shared_ptr<::gloo::transport::Device> gloo_device() {
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface != nullptr && interface[0] != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::Backend> gloo_backend(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(gloo_device());
  options->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}
#else
c10::intrusive_ptr<c10d::Backend> gloo_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, std::chrono::milliseconds) {
  throw std::runtime_error("this binary was built without Gloo (its headers were missing at build time: install libgloo-dev, as `make build` does, and rebuild)");
}
#endif

// Forgets the collectives that finished well; rethrows the first failure among the finished ones.
void settle(Group* group) {
  std::vector<c10::intrusive_ptr<c10d::Work>> unfinished;
  for (auto& work : group->pending) {
    if (!work->isCompleted()) {
      unfinished.push_back(work);
    } else if (auto failure = work->exception()) {
      group->pending.clear();
      std::rethrow_exception(failure);
    }
  }
  group->pending = std::move(unfinished);
}

void wait(Group* group, c10::intrusive_ptr<c10d::Work> work) {
  settle(group);
  work->wait();
  group->pending.push_back(std::move(work));
}

}  // namespace

extern "C" {

// Whether this build can make Gloo groups.
int snn_c10d_has_gloo() {
#ifdef SNN_WITH_GLOO
  return 1;
#else
  return 0;
#endif
}

// Whether this build can make NCCL groups.
int snn_c10d_has_nccl() {
#ifdef SNN_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Joins the group: rank 0 serves the store on `port`, every rank connects to `host:port`.
void* snn_c10d_new(const char* backend, const char* host, int port, int rank, int world, int64_t timeout_ms,
                   char* error, size_t capacity) {
  Group* group = nullptr;
  guarded(error, capacity, [&] {
    std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(world);
    options.waitWorkers = true;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    c10::intrusive_ptr<c10d::Backend> made;
    if (std::string(backend) == "nccl") {
#ifdef SNN_WITH_NCCL
      made = snn_nccl_backend(store, rank, world, timeout);
#else
      throw std::runtime_error("this binary was built without NCCL (no CUDA libtorch or NCCL headers at build time)");
#endif
    } else {
      made = gloo_backend(store, rank, world, timeout);
    }
    group = new Group{store, made, timeout};
  });
  return group;
}

// Leaves the group: shuts the backend down (aborts it after an error), then frees it.
void snn_c10d_free(void* handle) {
  auto group = static_cast<Group*>(handle);
  try {
    if (group->failed) {
      group->backend->abort();
    } else {
      group->backend->shutdown();
    }
  } catch (...) {
  }
  delete group;
}

// Fails with the first error of a collective issued since the last check that has finished with one
// (a timeout or a failed peer, noticed by the backend's watchdog); forgets the finished ones.
int snn_c10d_check(void* handle, char* error, size_t capacity) {
  return guarded_on(handle, error, capacity, [&] { settle(static_cast<Group*>(handle)); });
}

// `tensor` is a tch tensor (an at::Tensor*), summed in place.
int snn_c10d_all_reduce_sum(void* handle, void* tensor, char* error, size_t capacity) {
  return guarded_on(handle, error, capacity, [&] {
    auto group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
    options.timeout = group->timeout;
    wait(group, group->backend->allreduce(tensors, options));
  });
}

int snn_c10d_broadcast(void* handle, void* tensor, int root, char* error, size_t capacity) {
  return guarded_on(handle, error, capacity, [&] {
    auto group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    wait(group, group->backend->broadcast(tensors, options));
  });
}

}  // extern "C"
