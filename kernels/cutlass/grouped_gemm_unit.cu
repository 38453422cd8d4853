// One compilation unit per grouped GEMM configuration: built with -DFP4BENCH_CONFIG=<name from configs.cuh>.
#include "grouped_gemm.cuh"
#include "configs.cuh"

#ifndef FP4BENCH_CONFIG
#error "build with -DFP4BENCH_CONFIG=<grouped config name from configs.cuh>"
#endif

FP4BENCH_EXPORT_GROUPED(FP4BENCH_CONFIG)
