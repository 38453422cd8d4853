// Host-only probe: prints the byte offsets of CUTLASS's scale-factor layouts for fp4bench's GEMM configs.
//
// Usage: layout_probe CONFIG M N K L
//        layout_probe abi        (size and field offsets of Fp4benchGemmArgs, for the ctypes mirror)
// For the config's mainloop (the very Sm1xxBlkScaledConfig the kernels use) it evaluates
// tile_atom_to_shape_SFA/SFB(M, N, K, L) at every scale (row r, scale column kb, batch l) and prints
//   SFA <rows> <scale cols> <L> <cosize>
//   <offsets, one line, in (l, r, kb) order>
// and the same for SFB. tests/test_cutlass_layout.py compares them with fp4bench.layouts, bit for bit.
// Built with nvcc as host code only (no kernel is instantiated), so it runs on any machine.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "blockscaled_gemm.cuh"
#include "configs.cuh"

namespace {

template <class Layout>
void print_offsets(const char* operand, Layout layout, int rows, int k, int l, int sf_vec) {
  int cols = k / sf_vec;
  long long cosize = static_cast<long long>(cute::cosize(cute::filter_zeros(layout)));
  std::printf("%s %d %d %d %lld\n", operand, rows, cols, l, cosize);
  for (int b = 0; b < l; ++b) {
    for (int r = 0; r < rows; ++r) {
      for (int kb = 0; kb < cols; ++kb) {
        // The layout is indexed by element coordinates; every element of a block maps to its scale.
        std::printf("%lld ", static_cast<long long>(layout(cute::make_coord(r, kb * sf_vec, b))));
      }
    }
  }
  std::printf("\n");
}

template <class Config>
int probe(int m, int n, int k, int l) {
  using ScaleConfig = typename fp4bench::BlockScaledGemm<Config>::ScaleConfig;
  constexpr int sf_vec = ScaleConfig::SFVecSize;
  if (k % sf_vec != 0) {
    std::fprintf(stderr, "K=%d is not a multiple of the scale block %d\n", k, sf_vec);
    return 2;
  }
  auto problem = cute::make_shape(m, n, k, l);
  print_offsets("SFA", ScaleConfig::tile_atom_to_shape_SFA(problem), m, k, l, sf_vec);
  print_offsets("SFB", ScaleConfig::tile_atom_to_shape_SFB(problem), n, k, l, sf_vec);
  return 0;
}

struct Entry {
  const char* name;
  int (*fn)(int, int, int, int);
};

// One entry per distinct scale configuration the kernels use (SM120 and SM100, 16- and 32-element blocks).
const Entry kConfigs[] = {
    {"sm120_nvfp4_f16_128x128x256", &probe<sm120_nvfp4_f16_128x128x256>},
    {"sm120_mxfp4_bf16_128x128x256", &probe<sm120_mxfp4_bf16_128x128x256>},
    {"sm120_w4a8_bf16_128x128x128", &probe<sm120_w4a8_bf16_128x128x128>},
    {"sm120_mxfp8_bf16_128x128x128", &probe<sm120_mxfp8_bf16_128x128x128>},
    {"sm100_nvfp4_f16_128x128x256", &probe<sm100_nvfp4_f16_128x128x256>},
    {"sm100_w4a8_bf16_128x128x128", &probe<sm100_w4a8_bf16_128x128x128>},
    {"sm100_mxfp8_bf16_128x128x128", &probe<sm100_mxfp8_bf16_128x128x128>},
};

#define FP4BENCH_FIELD(f) std::printf(#f " %zu\n", offsetof(Fp4benchGemmArgs, f));
int print_abi() {
  std::printf("sizeof %zu\n", sizeof(Fp4benchGemmArgs));
  FP4BENCH_FIELD(a) FP4BENCH_FIELD(b) FP4BENCH_FIELD(sfa) FP4BENCH_FIELD(sfb) FP4BENCH_FIELD(d)
  FP4BENCH_FIELD(m) FP4BENCH_FIELD(n) FP4BENCH_FIELD(k) FP4BENCH_FIELD(l)
  FP4BENCH_FIELD(lda) FP4BENCH_FIELD(batch_stride_a) FP4BENCH_FIELD(ldb) FP4BENCH_FIELD(batch_stride_b)
  FP4BENCH_FIELD(ldd) FP4BENCH_FIELD(batch_stride_d) FP4BENCH_FIELD(alpha)
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "abi") == 0) return print_abi();
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s CONFIG M N K L\n", argv[0]);
    return 2;
  }
  int m = std::atoi(argv[2]), n = std::atoi(argv[3]), k = std::atoi(argv[4]), l = std::atoi(argv[5]);
  if (m <= 0 || n <= 0 || k <= 0 || l <= 0) {
    std::fprintf(stderr, "M, N, K, L must be positive\n");
    return 2;
  }
  for (const Entry& e : kConfigs) {
    if (std::strcmp(e.name, argv[1]) == 0) return e.fn(m, n, k, l);
  }
  std::fprintf(stderr, "unknown config %s\n", argv[1]);
  return 2;
}
