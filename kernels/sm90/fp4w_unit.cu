// One compilation unit per mainloop and tile configuration of the sm90 FP4-weight GEMM, chosen by -D defines
// that fp4bench/kernels/sm90_wgmma.py writes from its configuration table (the one source of these values):
//   FP4W_NAME     the configuration's name; the exported entry points are fp4w_<name>_<what>
//   FP4W_WEIGHTS  kNvfp4 or kMxfp4;  FP4W_TYPE  __half or __nv_bfloat16 (the MMA type of both operands)
//   FP4W_BN, FP4W_MT, FP4W_STAGES, FP4W_GROUP, FP4W_DEPTH   activation rows per tile, m64 tiles per
//                 consumer, pipeline depth, 16-deep K steps per wgmma commit group, groups left in flight,
//                 consumer warpgroups
// Keeping each instantiation in its own object lets ninja compile them in parallel.
#include "fp4w_gemm.cuh"

#if !defined(FP4W_NAME) || !defined(FP4W_WEIGHTS) || !defined(FP4W_TYPE) || !defined(FP4W_BN) || \
    !defined(FP4W_MT) || !defined(FP4W_STAGES) || !defined(FP4W_GROUP) || !defined(FP4W_DEPTH) || !defined(FP4W_NCW)
#error "build with -DFP4W_NAME, FP4W_WEIGHTS, FP4W_TYPE, FP4W_BN, FP4W_MT, FP4W_STAGES, FP4W_GROUP, FP4W_DEPTH and FP4W_NCW"
#endif

#define FP4W_PASTE(a, b, c, d) a##b##c##d
#define FP4W_ENTRY(name, what) FP4W_PASTE(fp4w_, name, _, what)

namespace {
using Launcher = fp4w::Launcher<fp4w::Weights::FP4W_WEIGHTS, FP4W_TYPE, FP4W_BN, FP4W_MT, FP4W_STAGES, FP4W_GROUP, FP4W_DEPTH, FP4W_NCW>;
}

extern "C" {

int FP4W_ENTRY(FP4W_NAME, run)(const Fp4wGemmArgs* args, void* stream) {
  return Launcher::run(*args, static_cast<cudaStream_t>(stream));
}

int FP4W_ENTRY(FP4W_NAME, check)(const Fp4wGemmArgs* args) { return Launcher::check(*args); }

size_t FP4W_ENTRY(FP4W_NAME, workspace_size)(const Fp4wGemmArgs* args) { return Launcher::workspace_size(*args); }

int64_t FP4W_ENTRY(FP4W_NAME, counter_count)(const Fp4wGemmArgs* args) { return Launcher::counter_count(*args); }

// What was compiled, for the Python table to check against: weights, 16-bit type (1: bf16), BN, MT, stages,
// dynamic shared memory bytes, K steps per commit group, groups in flight, consumer warpgroups.
void FP4W_ENTRY(FP4W_NAME, describe)(int32_t* out) {
  using G = Launcher::G;
  out[0] = static_cast<int32_t>(fp4w::Weights::FP4W_WEIGHTS);
  out[1] = std::is_same<FP4W_TYPE, __nv_bfloat16>::value ? 1 : 0;
  out[2] = FP4W_BN;
  out[3] = FP4W_MT;
  out[4] = FP4W_STAGES;
  out[5] = G::kSmemBytes;
  out[6] = FP4W_GROUP;
  out[7] = FP4W_DEPTH;
  out[8] = FP4W_NCW;
}

}  // extern "C"
