// The C ABI between fp4bench (Python, ctypes) and every CUTLASS block-scaled GEMM unit.
//
// Mirrored field for field by fp4bench.kernels.cutlass_blackwell.GemmArgsStruct (and GroupStruct,
// GroupedArgsStruct); change both together.
// Strides are in elements of the operand (an fp4 element is half a byte). A is M x K row-major (K-major),
// B is N x K (K-major, CUTLASS's ColumnMajor B), D is M x N row-major; batch L uses the batch strides.
// Scale pointers address the blocked 128x4 layout of batch 0; CUTLASS derives the per-batch offset itself.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

struct Fp4benchGemmArgs {
  const void* a;
  const void* b;
  const void* sfa;
  const void* sfb;
  void* d;
  int32_t m, n, k, l;
  int64_t lda, batch_stride_a;
  int64_t ldb, batch_stride_b;
  int64_t ldd, batch_stride_d;
  float alpha;
};

// One group of a grouped GEMM (L = 1): D[m, n] = A[m, k] . B[n, k]^T, strides in elements as above. Scale
// pointers address the group's blocked 128x4 scales (the storage behind its permuted view).
struct Fp4benchGroup {
  const void* a;
  const void* b;
  const void* sfa;
  const void* sfb;
  void* d;
  int32_t m, n, k;
  int64_t lda, ldb, ldd;
};

// A grouped GEMM: `count` groups in host memory, computed in one launch. `sm_count` sizes CUTLASS's
// persistent grid and its workspace (per-SM tensor-map copies), so it is an argument, not a device query.
struct Fp4benchGroupedGemmArgs {
  const Fp4benchGroup* groups;
  int32_t count;
  int32_t sm_count;
  float alpha;
};

// Return codes of the exported functions: 0 success, > 0 a cutlass::Status, < 0 minus a cudaError_t.
const char* fp4bench_status_string(int code);

}  // extern "C"
