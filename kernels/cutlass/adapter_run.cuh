// What every CUTLASS GEMM library of fp4bench does at its `run` entry and at its instantiation, in one place.
#pragma once

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"

namespace fp4bench {

// can_implement, initialize and run one GemmUniversalAdapter on `stream`. Returns 0, a cutlass::Status (> 0),
// or minus the cudaError_t of the launch.
template <class Gemm>
int run_adapter(const typename Gemm::Arguments& args, void* workspace, cudaStream_t stream) {
  Gemm gemm;
  cutlass::Status status = gemm.can_implement(args);
  if (status != cutlass::Status::kSuccess) return static_cast<int>(status);
  status = gemm.initialize(args, workspace, stream);
  if (status != cutlass::Status::kSuccess) return static_cast<int>(status);
  status = gemm.run(stream);
  if (status != cutlass::Status::kSuccess) return static_cast<int>(status);
  // A launch failure surfaces here rather than at the caller's next unrelated CUDA call.
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? 0 : -static_cast<int>(err);
}

}  // namespace fp4bench

// Device code built for any other target than the config's would be CUTLASS's empty fallback kernel.
#if defined(__CUDA_ARCH__)
#define FP4BENCH_CHECK_TARGET(CFG) \
  static_assert(__CUDA_ARCH__ / 10 == CFG::kSm, #CFG " compiled for the wrong GPU target");
#else
#define FP4BENCH_CHECK_TARGET(CFG)
#endif
