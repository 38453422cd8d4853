// Host-only probe: prints the byte offsets of CUTLASS's scale-factor layouts for fp4bench's GEMM configs.
//
// Usage: layout_probe CONFIG M N K L
//        layout_probe group GROUPED_CONFIG M,N,K,LDA,LDB,LDD ...   (one argument per group)
//        layout_probe abi        (sizes and field offsets of the C ABI structs, for the ctypes mirrors)
// For the config's mainloop (the very Sm1xxBlkScaledConfig the kernels use) it evaluates
// tile_atom_to_shape_SFA/SFB(M, N, K, L) at every scale (row r, scale column kb, batch l) and prints
//   SFA <rows> <scale cols> <L> <cosize>
//   <offsets, one line, in (l, r, kb) order>
// and the same for SFB. tests/test_cutlass_layout.py compares them with fp4bench.layouts, bit for bit.
// `group` packs the grouped kernel's argument image (the very `pack` the library runs) for groups with
// stand-in addresses (group g's A at (g + 1) << 32, B, SFA, SFB, D at that plus 1, 2, 3, 4 << 28) and reads
// every group back out of it as CUTLASS will: per group
//   GROUP <g> <m> <n> <k> <a> <b> <sfa> <sfb> <d> <stride A row> <stride B row> <stride D row>
// (shape, pointers, strides as stored), then its SFA and SFB offsets as above (L = 1).
// Built with nvcc as host code only (no kernel is instantiated), so it runs on any machine.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <vector>

#include "blockscaled_gemm.cuh"
#include "grouped_gemm.cuh"
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

template <class Config>
int probe_groups(int count, char** specs) {
  using G = fp4bench::GroupedBlockScaledGemm<Config>;
  constexpr int sf_vec = G::ScaleConfig::SFVecSize;
  std::vector<Fp4benchGroup> groups(count);
  for (int g = 0; g < count; ++g) {
    Fp4benchGroup& q = groups[g];
    long long lda, ldb, ldd;
    if (std::sscanf(specs[g], "%d,%d,%d,%lld,%lld,%lld", &q.m, &q.n, &q.k, &lda, &ldb, &ldd) != 6 ||
        q.m <= 0 || q.n <= 0 || q.k <= 0 || q.k % sf_vec != 0) {
      std::fprintf(stderr, "group %d: expected M,N,K,LDA,LDB,LDD with K a multiple of %d, got %s\n", g, sf_vec,
                   specs[g]);
      return 2;
    }
    q.lda = lda, q.ldb = ldb, q.ldd = ldd;
    unsigned long long base = static_cast<unsigned long long>(g + 1) << 32;
    q.a = reinterpret_cast<const void*>(base);
    q.b = reinterpret_cast<const void*>(base + (1ull << 28));
    q.sfa = reinterpret_cast<const void*>(base + (2ull << 28));
    q.sfb = reinterpret_cast<const void*>(base + (3ull << 28));
    q.d = reinterpret_cast<void*>(base + (4ull << 28));
  }
  Fp4benchGroupedGemmArgs args{groups.data(), count, 1, 1.0f};
  auto l = G::image_layout(count);
  std::vector<uint4> storage((l.bytes + sizeof(uint4) - 1) / sizeof(uint4));   // 16-byte aligned
  void* image = storage.data();
  G::pack(args, image);
  std::printf("IMAGE %d %zu\n", count, l.bytes);
  for (int g = 0; g < count; ++g) {
    auto shape = G::template at<typename G::GroupShape>(image, l.shapes)[g];
    int m = cute::get<0>(shape), n = cute::get<1>(shape), k = cute::get<2>(shape);
    auto ptr = [&](size_t section) { return reinterpret_cast<unsigned long long>(G::template at<void*>(image, section)[g]); };
    std::printf("GROUP %d %d %d %d %llu %llu %llu %llu %llu %lld %lld %lld\n", g, m, n, k, ptr(l.a), ptr(l.b),
                ptr(l.sfa), ptr(l.sfb), ptr(l.d),
                static_cast<long long>(cute::get<0>(G::template at<typename G::StrideA>(image, l.stride_a)[g])),
                static_cast<long long>(cute::get<0>(G::template at<typename G::StrideB>(image, l.stride_b)[g])),
                static_cast<long long>(cute::get<0>(G::template at<typename G::StrideD>(image, l.stride_d)[g])));
    print_offsets("SFA", G::template at<typename G::LayoutSFA>(image, l.layout_sfa)[g], m, k, 1, sf_vec);
    print_offsets("SFB", G::template at<typename G::LayoutSFB>(image, l.layout_sfb)[g], n, k, 1, sf_vec);
  }
  return 0;
}

struct GroupedEntry {
  const char* name;
  int (*fn)(int, char**);
};

const GroupedEntry kGroupedConfigs[] = {
    {"sm120_nvfp4_grouped_f16_128x128x128", &probe_groups<sm120_nvfp4_grouped_f16_128x128x128>},
    {"sm100_nvfp4_grouped_f16_128x128x256", &probe_groups<sm100_nvfp4_grouped_f16_128x128x256>},
};

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

// One line per field, "<struct> <field> <offset>", after "<struct> sizeof <size>".
#define FP4BENCH_FIELD(S, f) std::printf(#S " " #f " %zu\n", offsetof(S, f));
int print_abi() {
  std::printf("Fp4benchGemmArgs sizeof %zu\n", sizeof(Fp4benchGemmArgs));
#define F(f) FP4BENCH_FIELD(Fp4benchGemmArgs, f)
  F(a) F(b) F(sfa) F(sfb) F(d) F(m) F(n) F(k) F(l)
  F(lda) F(batch_stride_a) F(ldb) F(batch_stride_b) F(ldd) F(batch_stride_d) F(alpha)
#undef F
  std::printf("Fp4benchGroup sizeof %zu\n", sizeof(Fp4benchGroup));
#define F(f) FP4BENCH_FIELD(Fp4benchGroup, f)
  F(a) F(b) F(sfa) F(sfb) F(d) F(m) F(n) F(k) F(lda) F(ldb) F(ldd)
#undef F
  std::printf("Fp4benchGroupedGemmArgs sizeof %zu\n", sizeof(Fp4benchGroupedGemmArgs));
#define F(f) FP4BENCH_FIELD(Fp4benchGroupedGemmArgs, f)
  F(groups) F(count) F(sm_count) F(alpha)
#undef F
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "abi") == 0) return print_abi();
  if (argc >= 4 && std::strcmp(argv[1], "group") == 0) {
    for (const GroupedEntry& e : kGroupedConfigs) {
      if (std::strcmp(e.name, argv[2]) == 0) return e.fn(argc - 3, argv + 3);
    }
    std::fprintf(stderr, "unknown grouped config %s\n", argv[2]);
    return 2;
  }
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s CONFIG M N K L | group GROUPED_CONFIG M,N,K,LDA,LDB,LDD ... | abi\n", argv[0]);
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
