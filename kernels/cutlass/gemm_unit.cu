// One compilation unit per GEMM configuration: built with -DFP4BENCH_CONFIG=<name from configs.cuh>.
// Keeping each heavy CUTLASS instantiation in its own object lets ninja build them in parallel and
// lets the build cache rebuild only what changed.
#include "blockscaled_gemm.cuh"
#include "configs.cuh"

#ifndef FP4BENCH_CONFIG
#error "build with -DFP4BENCH_CONFIG=<config name from configs.cuh>"
#endif

FP4BENCH_EXPORT_GEMM(FP4BENCH_CONFIG)
