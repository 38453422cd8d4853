// The grouped (ptr-array) block-scaled GEMM of fp4bench: every group of a grouped problem in one launch.
//
// `GroupedBlockScaledGemm<Config>` assembles a CUTLASS grouped GEMM (GroupProblemShape, ptr-array layouts
// `Layout*`) from a config of configs.cuh, as CUTLASS examples 79d (SM120) and 75 (SM100) do. Constraints:
//   * per group, A is m x k row-major and B is n x k (both K-major), D is m x n row-major, L = 1;
//   * each group's scales are read in place from its blocked 128x4 layout (the storage behind the
//     competition's permuted view), through a per-group Sm1xxBlkScaledConfig layout;
//   * no C operand (ElementC = void), fp32 accumulation, D = alpha * accumulator in the output dtype.
// CUTLASS reads its per-group arguments from device arrays: problem shapes, A/B/SFA/SFB/D pointers, strides
// and scale layouts. `pack` writes all of them into one host buffer (the "argument image", sections at
// `ImageLayout` offsets) that the caller copies to the device once per input set; the timed call then only
// hands CUTLASS pointers into it. The image is built on the host from plain C structs, so it is testable on
// any machine (layout_probe prints it).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <new>
#include <utility>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

#include "adapter_run.cuh"
#include "gemm_args.h"

namespace fp4bench {

template <class Config>
struct GroupedBlockScaledGemm {
  using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;
  using GroupShape = typename ProblemShape::UnderlyingProblemShape;
  using LayoutATag = cutlass::layout::RowMajor;
  using LayoutBTag = cutlass::layout::ColumnMajor;
  using LayoutDTag = cutlass::layout::RowMajor;
  using ElementD = typename Config::ElementD;
  static constexpr int AlignmentD = 128 / cutlass::sizeof_bits<ElementD>::value;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      typename Config::ArchTag, typename Config::EpilogueOpClass,
      typename Config::TileShape, typename Config::ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto,
      float, float,
      void, LayoutDTag*, AlignmentD,
      ElementD, LayoutDTag*, AlignmentD,
      typename Config::EpilogueSchedule>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      typename Config::ArchTag, cutlass::arch::OpClassBlockScaledTensorOp,
      typename Config::ElementA, LayoutATag*, Config::AlignmentA,
      typename Config::ElementB, LayoutBTag*, Config::AlignmentB,
      float,
      typename Config::TileShape, typename Config::ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename Config::MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

  using ScaleConfig = typename CollectiveMainloop::Sm1xxBlkScaledConfig;
  using StrideA = typename GemmKernel::InternalStrideA;
  using StrideB = typename GemmKernel::InternalStrideB;
  using StrideD = typename GemmKernel::InternalStrideD;
  using LayoutSFA = typename CollectiveMainloop::InternalLayoutSFA;
  using LayoutSFB = typename CollectiveMainloop::InternalLayoutSFB;
  using MainloopArguments = typename CollectiveMainloop::Arguments;
  using EpilogueArguments = typename CollectiveEpilogue::Arguments;
  // The pointer-array types CUTLASS's arguments hold (ElementA const**, ...), taken from the arguments.
  using PtrA = decltype(std::declval<MainloopArguments>().ptr_A);
  using PtrB = decltype(std::declval<MainloopArguments>().ptr_B);
  using PtrSFA = decltype(std::declval<MainloopArguments>().ptr_SFA);
  using PtrSFB = decltype(std::declval<MainloopArguments>().ptr_SFB);
  using PtrD = decltype(std::declval<EpilogueArguments>().ptr_D);
  using PtrC = decltype(std::declval<EpilogueArguments>().ptr_C);
  using DStrideC = decltype(std::declval<EpilogueArguments>().dC);

  // Byte offsets of the argument image's sections, each 16-byte aligned; `bytes` is the total.
  struct ImageLayout {
    size_t shapes, a, b, sfa, sfb, d, stride_a, stride_b, stride_d, layout_sfa, layout_sfb, bytes;
  };

  static ImageLayout image_layout(int groups) {
    size_t at = 0;
    auto section = [&](size_t item) {
      size_t start = at;
      at = (at + item * static_cast<size_t>(groups) + 15) / 16 * 16;
      return start;
    };
    ImageLayout l{};
    l.shapes = section(sizeof(GroupShape));
    l.a = section(sizeof(void*));
    l.b = section(sizeof(void*));
    l.sfa = section(sizeof(void*));
    l.sfb = section(sizeof(void*));
    l.d = section(sizeof(void*));
    l.stride_a = section(sizeof(StrideA));
    l.stride_b = section(sizeof(StrideB));
    l.stride_d = section(sizeof(StrideD));
    l.layout_sfa = section(sizeof(LayoutSFA));
    l.layout_sfb = section(sizeof(LayoutSFB));
    l.bytes = at;
    return l;
  }

  // A K-major stride (ld, 1, batch) with the caller's leading dimension; L = 1, so the batch mode is 0.
  // (The wheel ships no cutlass/util, hence no make_cute_packed_stride.)
  template <class Stride>
  static Stride leading(int64_t ld) {
    using Unit = cute::remove_cvref_t<decltype(cute::get<1>(Stride{}))>;
    static_assert(cute::is_static<Unit>::value && Unit::value == 1, "expected a K-major (ld, 1, batch) stride");
    Stride s{};
    cute::get<0>(s) = ld;
    return s;
  }

  template <class T>
  static T* at(void* image, size_t offset) {
    return reinterpret_cast<T*>(static_cast<uint8_t*>(image) + offset);
  }

  // A section as the pointer-array type CUTLASS's arguments hold (from bytes: T const** is not a void**).
  template <class Ptr>
  static Ptr array(void* image, size_t offset) {
    return reinterpret_cast<Ptr>(static_cast<uint8_t*>(image) + offset);
  }

  // Writes the argument image of `p` into `image` (image_layout(p.count).bytes bytes, 16-byte aligned).
  static void pack(const Fp4benchGroupedGemmArgs& p, void* image) {
    ImageLayout l = image_layout(p.count);
    for (int g = 0; g < p.count; ++g) {
      const Fp4benchGroup& q = p.groups[g];
      new (at<GroupShape>(image, l.shapes) + g) GroupShape(q.m, q.n, q.k);
      at<const void*>(image, l.a)[g] = q.a;
      at<const void*>(image, l.b)[g] = q.b;
      at<const void*>(image, l.sfa)[g] = q.sfa;
      at<const void*>(image, l.sfb)[g] = q.sfb;
      at<void*>(image, l.d)[g] = q.d;
      new (at<StrideA>(image, l.stride_a) + g) StrideA(leading<StrideA>(q.lda));
      new (at<StrideB>(image, l.stride_b) + g) StrideB(leading<StrideB>(q.ldb));
      new (at<StrideD>(image, l.stride_d) + g) StrideD(leading<StrideD>(q.ldd));
      auto shape = cute::make_shape(q.m, q.n, q.k, 1);
      new (at<LayoutSFA>(image, l.layout_sfa) + g) LayoutSFA(ScaleConfig::tile_atom_to_shape_SFA(shape));
      new (at<LayoutSFB>(image, l.layout_sfb) + g) LayoutSFB(ScaleConfig::tile_atom_to_shape_SFB(shape));
    }
  }

  // CUTLASS's arguments: device arrays inside `device_image`, host problem shapes inside `host_image`
  // (CUTLASS checks every group's alignment on them; the kernel reads only the device copy).
  static typename Gemm::Arguments arguments(const Fp4benchGroupedGemmArgs& p, void* host_image, void* device_image) {
    ImageLayout l = image_layout(p.count);
    cutlass::KernelHardwareInfo hw_info;
    hw_info.sm_count = p.sm_count;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGrouped,
        {p.count, at<GroupShape>(device_image, l.shapes), at<const GroupShape>(host_image, l.shapes)},
        {array<PtrA>(device_image, l.a), at<StrideA>(device_image, l.stride_a),
         array<PtrB>(device_image, l.b), at<StrideB>(device_image, l.stride_b),
         array<PtrSFA>(device_image, l.sfa), at<LayoutSFA>(device_image, l.layout_sfa),
         array<PtrSFB>(device_image, l.sfb), at<LayoutSFB>(device_image, l.layout_sfb)},
        {{}, PtrC{nullptr}, DStrideC{}, array<PtrD>(device_image, l.d),
         at<StrideD>(device_image, l.stride_d)},
        hw_info};
    args.epilogue.thread.alpha = p.alpha;
    args.epilogue.thread.beta = 0.0f;
    return args;
  }

  static int can_implement(const Fp4benchGroupedGemmArgs& p, void* host_image) {
    // Host checks only: the device-array pointers are not dereferenced, so the host image stands in.
    auto args = arguments(p, host_image, host_image);
    return static_cast<int>(Gemm::can_implement(args));
  }

  static int workspace_size(const Fp4benchGroupedGemmArgs& p, void* host_image, size_t* bytes) {
    auto args = arguments(p, host_image, host_image);
    *bytes = Gemm::get_workspace_size(args);
    return 0;
  }

  static int run(const Fp4benchGroupedGemmArgs& p, void* host_image, void* device_image, void* workspace,
                 cudaStream_t stream) {
    return run_adapter<Gemm>(arguments(p, host_image, device_image), workspace, stream);
  }};

}  // namespace fp4bench


// Five C entry points per grouped config (see gemm_args.h for the structs; return codes as for GEMMs):
//   image_size(count, *bytes), pack(args, image), can_implement(args, host_image),
//   workspace_size(args, host_image, *bytes), run(args, host_image, device_image, workspace, stream).
#define FP4BENCH_EXPORT_GROUPED_(CFG)                                                                  \
  FP4BENCH_CHECK_TARGET(CFG)                                                                   \
  extern "C" int fp4bench_##CFG##_image_size(int32_t count, size_t* bytes) {                           \
    *bytes = fp4bench::GroupedBlockScaledGemm<CFG>::image_layout(count).bytes;                         \
    return 0;                                                                                          \
  }                                                                                                    \
  extern "C" int fp4bench_##CFG##_pack(const Fp4benchGroupedGemmArgs* p, void* image) {                \
    fp4bench::GroupedBlockScaledGemm<CFG>::pack(*p, image);                                            \
    return 0;                                                                                          \
  }                                                                                                    \
  extern "C" int fp4bench_##CFG##_can_implement(const Fp4benchGroupedGemmArgs* p, void* host_image) {  \
    return fp4bench::GroupedBlockScaledGemm<CFG>::can_implement(*p, host_image);                       \
  }                                                                                                    \
  extern "C" int fp4bench_##CFG##_workspace_size(const Fp4benchGroupedGemmArgs* p, void* host_image,   \
                                                  size_t* bytes) {                                     \
    return fp4bench::GroupedBlockScaledGemm<CFG>::workspace_size(*p, host_image, bytes);               \
  }                                                                                                    \
  extern "C" int fp4bench_##CFG##_run(const Fp4benchGroupedGemmArgs* p, void* host_image,              \
                                      void* device_image, void* workspace, void* stream) {             \
    return fp4bench::GroupedBlockScaledGemm<CFG>::run(*p, host_image, device_image, workspace,         \
                                                      static_cast<cudaStream_t>(stream));              \
  }
#define FP4BENCH_EXPORT_GROUPED(CFG) FP4BENCH_EXPORT_GROUPED_(CFG)
