// A host program that runs the sm90 kernel's decoding and its stream-K schedule on the CPU (the same
// __host__ __device__ code as the kernel; tests/test_sm90_wgmma.py compares the results with fp4bench's codecs):
//   decode_probe decode FILE          every (scale code, byte) through each mainloop's decode and scale, as the
//                                     consumers compute it, and through the FP4 x FP4 activation dequantizer;
//                                     little-endian uint32 records [5][256 codes][256 bytes] to FILE
//   decode_probe schedule T K G       the split of T tiles of K steps over G CTAs: one line per segment
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fp4w_gemm.cuh"

using namespace fp4w;

namespace {

// The byte sits at position q of the word; the other bytes hold something else, which the decode must ignore.
uint32_t word_with(uint32_t byte, int q) {
  const uint32_t noise = 0xA5C3E17Fu;
  return (noise & ~(0xFFu << (8 * q))) | (byte << (8 * q));
}

// As a consumer computes it: NVFP4 scales through splat4 on a word holding the code at position code % 4 among
// other codes, MXFP4 through splat.
template <Weights WF, typename T>
uint32_t consumer_value(uint32_t code, uint32_t byte) {
  const int q = static_cast<int>(code % 4);
  using S = BlockScale<WF, T>;
  uint32_t scale;
  if constexpr (WF == Weights::kNvfp4) {
    uint32_t splats[4];
    S::splat4(word_with(code, q), splats);
    scale = splats[q];
  } else {
    scale = S::splat(code);
  }
  return S::apply(e2m1_pair_bits<T>(word_with(byte, q), 0x4440u | q), scale);
}

int decode(const char* path) {
  std::vector<uint32_t> out;
  out.reserve(5 * 256 * 256);
  for (int table = 0; table < 5; ++table)
    for (uint32_t code = 0; code < 256; ++code)
      for (uint32_t byte = 0; byte < 256; ++byte) {
        uint32_t v = 0;
        switch (table) {
          case 0: v = consumer_value<Weights::kNvfp4, __half>(code, byte); break;
          case 1: v = consumer_value<Weights::kNvfp4, __nv_bfloat16>(code, byte); break;
          case 2: v = consumer_value<Weights::kMxfp4, __nv_bfloat16>(code, byte); break;
          case 3: v = dequant_pair<Weights::kNvfp4>(word_with(byte, code % 4), code % 4, code); break;
          case 4: v = dequant_pair<Weights::kMxfp4>(word_with(byte, code % 4), code % 4, code); break;
        }
        out.push_back(v);
      }
  FILE* f = std::fopen(path, "wb");
  if (!f) return 2;
  const size_t n = std::fwrite(out.data(), sizeof(uint32_t), out.size(), f);
  std::fclose(f);
  return n == out.size() ? 0 : 2;
}

int schedule(int64_t tiles, int k_steps, int grid) {
  const Schedule s{tiles * k_steps, k_steps, grid};
  for (int cta = 0; cta < grid; ++cta) {
    const int64_t end = s.start(cta + 1);
    for (int64_t x = s.start(cta); x < end;) {
      int64_t tile;
      int k_first, k_last;
      s.segment(x, end, &tile, &k_first, &k_last);
      const int first_cta = s.owner(tile * k_steps), last_cta = s.owner(tile * k_steps + k_steps - 1);
      std::printf("%d %lld %d %d %d %d %lld\n", cta, static_cast<long long>(tile), k_first, k_last, first_cta,
                  last_cta, static_cast<long long>(s.slot(cta, tile)));
      x += k_last - k_first;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && !std::strcmp(argv[1], "decode")) return decode(argv[2]);
  if (argc == 5 && !std::strcmp(argv[1], "schedule"))
    return schedule(std::atoll(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]));
  std::fprintf(stderr, "usage: decode_probe decode FILE | schedule TILES K_STEPS GRID\n");
  return 2;
}
