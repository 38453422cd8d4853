// The C interface of the sm90 FP4-weight GEMM library (mirrored by ctypes structures in
// fp4bench/kernels/sm90_wgmma.py; a test checks the layout).
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// C[m, n, l] = sum_k X[m, k, l] * W[n, k, l] * sw[n, k / block, l], fp32 accumulation.
// X: 16-bit activations (bf16, or fp16 for NVFP4 weights), element (m, k, l) at x + l*x_batch + m*x_row + k.
// W: packed e2m1 (two per byte, element 0 in the low nibble), byte (n, k / 2, l) at w + l*w_batch + n*w_row + k/2.
// sw: the blocked 128x4 scale layout (the bytes behind the competition's sf*_permuted), one matrix per batch.
// C: element (m, n, l) at c + l*c_batch + m*c_row + n*c_col, fp16 or bf16 (out_bf16).
typedef struct {
  const void* x;
  const void* w;
  const void* w_scales;
  void* c;
  void* workspace;        // fp32 partial tiles of the stream-K split (fp4w_<config>_workspace_size bytes)
  int32_t* counters;      // fp4w_<config>_counter_count int32: zero before the first call, left zero after each
  int32_t m, n, k, l;
  int64_t x_row, x_batch;             // elements
  int64_t w_row, w_batch;             // bytes
  int64_t w_scale_batch;              // bytes
  int64_t c_row, c_col, c_batch;      // elements
  int32_t out_bf16;
  int32_t grid;                       // CTAs of the persistent stream-K grid (<= the SM count)
} Fp4wGemmArgs;

// The activations of an FP4 x FP4 GEMM dequantized once, exactly: A (packed e2m1 + blocked scales, strides as
// W's) -> X [l][m][k] contiguous, fp16 for NVFP4 (e2m1 x e4m3 is exact in fp16), bf16 for MXFP4.
typedef struct {
  const void* a;
  const void* a_scales;
  void* x;
  int32_t m, k, l;
  int64_t a_row, a_batch, a_scale_batch;   // bytes
} Fp4wDequantArgs;

#ifdef __cplusplus
}
#endif
