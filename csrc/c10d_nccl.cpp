// The NCCL process group for the c10d shim (c10d_shim.cpp), compiled only when libtorch has CUDA
// and the NCCL and CUDA headers are present. One GPU per rank: the caller sets the device first.
//
// libtorch's default error handling (TORCH_NCCL_ASYNC_ERROR_HANDLING=3) kills the process when a
// collective times out. Unless the user chose a mode, we ask for CleanUpOnly (2): the watchdog
// aborts the communicators, which ends the hung collective, and records the error on its work,
// which snn_c10d_check then returns as an error naming the rank.

#define USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <cstdlib>

c10::intrusive_ptr<c10d::Backend> snn_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world, std::chrono::milliseconds timeout) {
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", 0);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}
