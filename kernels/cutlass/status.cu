// Human-readable text for the return codes of every exported GEMM entry point (see gemm_args.h).
// One copy per shared library: it is its own compilation unit, cheap to build.
#include "gemm_args.h"

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"

extern "C" const char* fp4bench_status_string(int code) {
  if (code < 0) {
    return cudaGetErrorString(static_cast<cudaError_t>(-code));
  }
  return cutlass::cutlassGetStatusString(static_cast<cutlass::Status>(code));
}
