// The NCCL process group for the c10d shim (c10d_shim.cpp), compiled only when libtorch has CUDA
// and the NCCL and CUDA headers are present. One GPU per rank: the caller sets the device first.

#define USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> snn_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}
