// A thin C interface to libtorch's own c10d (docs/method.md, "Data-parallel training"): a
// TCPStore rendezvous, a Gloo or NCCL process group, and the two collectives training needs
// (a summing all-reduce and a broadcast) on tch tensors. Every call catches C++ exceptions and returns
// their message, so that Rust reports them as errors instead of aborting.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SNN_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#ifdef SNN_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> snn_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, std::chrono::milliseconds timeout);
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
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

void wait(Group* group, c10::intrusive_ptr<c10d::Work> work) {
  work->wait(group->timeout);
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

void snn_c10d_free(void* group) {
  delete static_cast<Group*>(group);
}

// `tensor` is a tch tensor (an at::Tensor*), summed in place.
int snn_c10d_all_reduce_sum(void* handle, void* tensor, char* error, size_t capacity) {
  return guarded(error, capacity, [&] {
    auto group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
    options.timeout = group->timeout;
    wait(group, group->backend->allreduce(tensors, options));
  });
}

int snn_c10d_broadcast(void* handle, void* tensor, int root, char* error, size_t capacity) {
  return guarded(error, capacity, [&] {
    auto group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    wait(group, group->backend->broadcast(tensors, options));
  });
}

}  // extern "C"
