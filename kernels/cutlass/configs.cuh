// The table of CUTLASS block-scaled GEMM configurations fp4bench builds; one per tile of each variant.
//
// A config is only types (no instantiation): gemm_unit.cu instantiates the one named by -DFP4BENCH_CONFIG.
// fp4bench.kernels.cutlass_blackwell lists the same names per kernel; a test keeps the two tables in step.
// Facts the choices rest on (CUTLASS 4.x builders and unit tests):
//   SM120  cluster 1x1x1 only (no multicast); ~99 KB shared memory; NVFP4 tiles 128x128x128,
//          128x128x256 and 256x128x128 (cooperative) build and pass CUTLASS's tests.
//          MXFP8 x MXFP4 takes the mxf8f6f4 MMA: the FP4 operand is TMA-loaded into 8-bit containers and
//          needs 128-element alignment (K % 128 == 0); configuration of CUTLASS's SM120 mxf8 x mxf4 unit
//          test: tile 128x128x128, plain Cooperative schedule, tensor-op epilogue with the Auto schedule.
//   SM100  1-SM tcgen05 kernels with cluster 1x1x1: the competition's M = 128 fills exactly one 128-row
//          UMMA; 2-SM (256-row) tiles would compute half padding there.
#pragma once

#include "cute/tensor.hpp"
#include "cutlass/epilogue/dispatch_policy.hpp"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/numeric_types.h"

namespace fp4bench {

template <class ArchTag_, int Sm, class ElementA_, int AlignmentA_, class ElementB_, int AlignmentB_,
          class ElementD_, class TileShape_, class MainloopSchedule_, class EpilogueSchedule_,
          class EpilogueOpClass_ = cutlass::arch::OpClassTensorOp>
struct GemmConfig {
  using ArchTag = ArchTag_;
  static constexpr int kSm = Sm;
  using ElementA = ElementA_;  // a block-scaled pair type: DataType + ScaleFactorType
  static constexpr int AlignmentA = AlignmentA_;
  using ElementB = ElementB_;
  static constexpr int AlignmentB = AlignmentB_;
  using ElementD = ElementD_;
  using TileShape = TileShape_;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using MainloopSchedule = MainloopSchedule_;
  using EpilogueSchedule = EpilogueSchedule_;
  using EpilogueOpClass = EpilogueOpClass_;
};

using NvFp4 = cutlass::nv_float4_t<cutlass::float_e2m1_t>;
using MxFp4 = cutlass::mx_float4_t<cutlass::float_e2m1_t>;
using MxFp8 = cutlass::mx_float8_t<cutlass::float_e4m3_t>;

// 16 bytes of packed FP4 per TMA row access.
constexpr int kFp4Alignment = 32;
// The mxf8f6f4 MMA reads FP4 from 8-bit shared-memory containers: CUTLASS requires 128 elements.
constexpr int kFp4InF8f6f4Alignment = 128;
constexpr int kFp8Alignment = 16;

template <int M, int N, int K>
using Tile = cute::Shape<cute::Int<M>, cute::Int<N>, cute::Int<K>>;

using Sm120Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using Sm120Auto = cutlass::epilogue::collective::EpilogueScheduleAuto;

template <class ElementA, int AlignA, class ElementB, int AlignB, class ElementD, class Tile_>
using Sm120Gemm = GemmConfig<cutlass::arch::Sm120, 120, ElementA, AlignA, ElementB, AlignB, ElementD, Tile_,
                             Sm120Coop, Sm120Auto>;

template <class ElementA, int AlignA, class ElementB, int AlignB, class ElementD, class Tile_, class Schedule>
using Sm100Gemm = GemmConfig<cutlass::arch::Sm100, 100, ElementA, AlignA, ElementB, AlignB, ElementD, Tile_,
                             Schedule, cutlass::epilogue::TmaWarpSpecialized1Sm>;

}  // namespace fp4bench

// Config names are global so that FP4BENCH_EXPORT_GEMM can paste them into symbol names.
// sm120-nvfp4: fp16 out (the competition's semantics) at two tiles, and a bf16-out flavour.
using sm120_nvfp4_f16_128x128x256 = fp4bench::Sm120Gemm<fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                                                        fp4bench::kFp4Alignment, cutlass::half_t, fp4bench::Tile<128, 128, 256>>;
using sm120_nvfp4_f16_256x128x128 = fp4bench::Sm120Gemm<fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                                                        fp4bench::kFp4Alignment, cutlass::half_t, fp4bench::Tile<256, 128, 128>>;
using sm120_nvfp4_bf16_128x128x256 = fp4bench::Sm120Gemm<fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                                                         fp4bench::kFp4Alignment, cutlass::bfloat16_t, fp4bench::Tile<128, 128, 256>>;
// sm120-mxfp4
using sm120_mxfp4_bf16_128x128x256 = fp4bench::Sm120Gemm<fp4bench::MxFp4, fp4bench::kFp4Alignment, fp4bench::MxFp4,
                                                         fp4bench::kFp4Alignment, cutlass::bfloat16_t, fp4bench::Tile<128, 128, 256>>;
// sm120-w4a8: MXFP8 activations x MXFP4 weights
using sm120_w4a8_bf16_128x128x128 = fp4bench::Sm120Gemm<fp4bench::MxFp8, fp4bench::kFp8Alignment, fp4bench::MxFp4,
                                                        fp4bench::kFp4InF8f6f4Alignment, cutlass::bfloat16_t,
                                                        fp4bench::Tile<128, 128, 128>>;
// sm120-mxfp8: MXFP8 x MXFP8 (example 79c's mainloop with an e4m3 B)
using sm120_mxfp8_bf16_128x128x128 = fp4bench::Sm120Gemm<fp4bench::MxFp8, fp4bench::kFp8Alignment, fp4bench::MxFp8,
                                                         fp4bench::kFp8Alignment, cutlass::bfloat16_t,
                                                         fp4bench::Tile<128, 128, 128>>;
// sm100-nvfp4
using sm100_nvfp4_f16_128x128x256 = fp4bench::Sm100Gemm<fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                                                        fp4bench::kFp4Alignment, cutlass::half_t, fp4bench::Tile<128, 128, 256>,
                                                        cutlass::gemm::KernelTmaWarpSpecialized1SmNvf4Sm100>;
// sm100-w4a8 (CUTLASS example 72c's operand mix, on a 1-SM tile)
using sm100_w4a8_bf16_128x128x128 = fp4bench::Sm100Gemm<fp4bench::MxFp8, fp4bench::kFp8Alignment, fp4bench::MxFp4,
                                                        fp4bench::kFp4InF8f6f4Alignment, cutlass::bfloat16_t,
                                                        fp4bench::Tile<128, 128, 128>,
                                                        cutlass::gemm::KernelTmaWarpSpecialized1SmMxf8f6f4Sm100>;
// sm100-mxfp8 (example 72c's mxf8f6f4 mainloop with e4m3 on both sides, on a 1-SM tile)
using sm100_mxfp8_bf16_128x128x128 = fp4bench::Sm100Gemm<fp4bench::MxFp8, fp4bench::kFp8Alignment, fp4bench::MxFp8,
                                                         fp4bench::kFp8Alignment, cutlass::bfloat16_t,
                                                         fp4bench::Tile<128, 128, 128>,
                                                         cutlass::gemm::KernelTmaWarpSpecialized1SmMxf8f6f4Sm100>;

// Grouped (ptr-array) configurations, built by grouped_gemm_unit.cu: one launch over every group, each
// with its own M, N, K, pointers, strides and scale layouts (CUTLASS examples 79d and 75).
namespace fp4bench {
using Sm120GroupedCoop = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
using Sm100GroupedNvf4 = cutlass::gemm::KernelPtrArrayTmaWarpSpecialized1SmNvf4Sm100;
using Sm100GroupedEpilogue = cutlass::epilogue::PtrArrayTmaWarpSpecialized1Sm;
}  // namespace fp4bench
// sm120-nvfp4-grouped: example 79d's mainloop (block-scaled epilogue op class, Auto epilogue schedule), fp16 out.
using sm120_nvfp4_grouped_f16_128x128x128 =
    fp4bench::GemmConfig<cutlass::arch::Sm120, 120, fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                         fp4bench::kFp4Alignment, cutlass::half_t, fp4bench::Tile<128, 128, 128>,
                         fp4bench::Sm120GroupedCoop, fp4bench::Sm120Auto, cutlass::arch::OpClassBlockScaledTensorOp>;
// sm100-nvfp4-grouped: example 75's 1-SM ptr-array NVF4 mainloop on the 128x128x256 tile of sm100-nvfp4.
using sm100_nvfp4_grouped_f16_128x128x256 =
    fp4bench::GemmConfig<cutlass::arch::Sm100, 100, fp4bench::NvFp4, fp4bench::kFp4Alignment, fp4bench::NvFp4,
                         fp4bench::kFp4Alignment, cutlass::half_t, fp4bench::Tile<128, 128, 256>,
                         fp4bench::Sm100GroupedNvf4, fp4bench::Sm100GroupedEpilogue,
                         cutlass::arch::OpClassBlockScaledTensorOp>;
