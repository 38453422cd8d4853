// Exact FP4-weight GEMM for Hopper (sm_90a): C = X * dequant(W)^T, computed as C^T = dequant(W) * X^T.
//
// Hopper has no FP4 tensor cores. Each e2m1 weight times its block scale is exact in fp16 (NVFP4: e2m1 x e4m3
// has at most 6 significant bits) or bf16 (MXFP4: e2m1 x 2^k), so the weights are dequantized in registers and
// multiplied on the 16-bit tensor cores with fp32 accumulation: the only rounding is the accumulation's.
//
// Structure (one persistent CTA per SM, 1 + NCW warpgroups):
//  * warpgroup 0, one thread: the producer. TMA loads, per 64-deep K step, the packed weight rows (32 bytes a
//    row), the activation tile (128-byte rows, 128B swizzle) and the 512-byte chunk(s) of the blocked scale
//    layout into a STAGES-deep ring of shared-memory buffers guarded by full/empty mbarriers.
//  * warpgroups 1..NCW (2 to 4): consumers, 64 * MT weight rows each. Each decodes its weight fragment straight into the
//    registers of wgmma's A operand (swap-AB: weight rows are wgmma's M, the activation rows its N), so the
//    decoded weights never return to shared memory, and issues wgmma asynchronously: the fragment of the next
//    16-deep K step is decoded while the current wgmma runs (wgmma.wait_group 1).
//  * stream-K: the (tile, K step) iterations are split evenly over the CTAs; a tile split between CTAs is summed
//    by the last to arrive, which adds every part in K order (deterministic) and writes C.
//
// Decoding (per byte of two e2m1 nibbles, element 0 low, into one 16-bit pair): prmt picks the byte; one
// multiply places both nibbles 16 bits apart; a mask, a shift and a mask put exponent+mantissa and sign where
// the 16-bit format wants them, giving e2m1 * 2^-14 as fp16 or e2m1 * 2^-126 as bf16 (subnormals included).
// Then one multiply by the block scale (fp16: s; bf16 NVFP4: s * 2^118) or two (MXFP4: 2^126, then 2^(c-127)).
// The constant factors left over (2^14 for fp16, 2^8 for bf16 NVFP4) are powers of two applied to the fp32
// result in the epilogue, which is exact: no product or partial sum comes near fp32's subnormal range.
//
// Constraints: K a multiple of 32 (16-byte TMA rows of packed e2m1); 16-byte aligned base addresses and
// 16-byte multiples for every row and batch stride; C may have any strides. M, N, L any.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "fp4w_args.h"
#include "wgmma_rs.cuh"

namespace fp4w {

enum class Weights : int { kNvfp4 = 0, kMxfp4 = 1 };

constexpr int kBK = 64;                // K per stage: one 128-byte row of 16-bit activations
constexpr int kWRowBytes = kBK / 2;    // packed e2m1 bytes of one weight row per stage
constexpr int kChunkBytes = 512;       // one 128-row x 4-column tile of the blocked scale layout
constexpr int kChunkRows = 128;
constexpr int kProducerRegs = 40;

template <Weights WF>
struct WeightTraits;
template <>
struct WeightTraits<Weights::kNvfp4> {
  static constexpr int kBlock = 16;
};
template <>
struct WeightTraits<Weights::kMxfp4> {
  static constexpr int kBlock = 32;
};

// ------------------------------------------------------------------------------------------ PTX helpers

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2,
                                            uint32_t bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar), "l"(policy)
      : "memory");
}

__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

__device__ __forceinline__ uint64_t policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

__device__ __forceinline__ uint64_t policy_evict_last() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accesses of a wgmma operand across the asynchronous region.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void fence_operand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The decoding helpers below are __host__ __device__: the host build (decode_probe.cu) runs the same bit
// placement on every byte and scale code, with these few instructions emulated in C.
#define FP4W_HD __host__ __device__ __forceinline__

// prmt.b32 (default mode): byte i of the result is byte sel[4i+2:4i] of {b, a}, or its sign spread if sel[4i+3].
FP4W_HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
#else
  const uint64_t bytes = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t d = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t s = (sel >> (4 * i)) & 0xF;
    uint32_t byte = static_cast<uint32_t>(bytes >> (8 * (s & 7))) & 0xFF;
    if (s & 8) byte = (byte & 0x80) ? 0xFF : 0x00;
    d |= byte << (8 * i);
  }
  return d;
#endif
}

// A wgmma matrix descriptor for a K-major tile in the 128B-swizzled layout TMA writes (8-row atoms of 128-byte
// rows, 1024 bytes apart; the leading offset is unused for this layout).
__device__ __forceinline__ uint64_t swizzled_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

// ----------------------------------------------------------------------------------------- decoding

// Bit placement of one byte's two e2m1 nibbles into a 16-bit pair (low nibble -> low half):
// t = byte * kMul puts the nibbles kHalf bits apart, kKeep keeps them, (t | t << kSign) & kPlace moves each
// sign bit to bit 15 of its half and leaves exponent and mantissa where the format's low exponent bits are.
template <typename T>
struct E2m1Placement;
template <>
struct E2m1Placement<__half> {        // fp16 bits = e2m1 * 2^-14
  static constexpr uint32_t kMul = (1u << 9) | (1u << 21);
  static constexpr uint32_t kKeep = 0x1E001E00u;
  static constexpr int kSign = 3;
  static constexpr uint32_t kPlace = 0x8E008E00u;
};
template <>
struct E2m1Placement<__nv_bfloat16> {  // bf16 bits = e2m1 * 2^-126
  static constexpr uint32_t kMul = (1u << 6) | (1u << 18);
  static constexpr uint32_t kKeep = 0x03C003C0u;
  static constexpr int kSign = 6;
  static constexpr uint32_t kPlace = 0x81C081C0u;
};

// The byte that `sel` (0x4440 + byte index) picks from `word`, as two 16-bit values times the placement factor.
template <typename T>
FP4W_HD uint32_t e2m1_pair_bits(uint32_t word, uint32_t sel) {
  using P = E2m1Placement<T>;
  const uint32_t t = (prmt(word, 0, sel) * P::kMul) & P::kKeep;
  return (t | (t << P::kSign)) & P::kPlace;
}

// Host emulation of the 16-bit pair multiply: through float, rounded once (the same result for every product
// this kernel forms, which are exact).
template <typename T>
inline uint32_t host_mul2(uint32_t a, uint32_t b) {
  uint32_t d = 0;
  for (int h = 0; h < 2; ++h) {
    const unsigned short x = static_cast<unsigned short>(a >> (16 * h)), y = static_cast<unsigned short>(b >> (16 * h));
    unsigned short r;
    if constexpr (std::is_same<T, __half>::value) {
      r = __half_as_ushort(__float2half_rn(__half2float(__ushort_as_half(x)) * __half2float(__ushort_as_half(y))));
    } else {
      __nv_bfloat16_raw rx{x}, ry{y};
      const float f = __bfloat162float(__nv_bfloat16(rx)) * __bfloat162float(__nv_bfloat16(ry));
      r = static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(f)).x;
    }
    d |= static_cast<uint32_t>(r) << (16 * h);
  }
  return d;
}

template <typename T>
FP4W_HD uint32_t mul2(uint32_t a, uint32_t b);
template <>
FP4W_HD uint32_t mul2<__half>(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
#else
  return host_mul2<__half>(a, b);
#endif
}
template <>
FP4W_HD uint32_t mul2<__nv_bfloat16>(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
#else
  return host_mul2<__nv_bfloat16>(a, b);
#endif
}

// Two e4m3 codes (low 16 bits) -> f16x2, exact.
FP4W_HD uint32_t e4m3x2_to_f16x2(uint32_t codes) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("{\n.reg .b16 c;\ncvt.u16.u32 c, %1;\ncvt.rn.f16x2.e4m3x2 %0, c;\n}\n" : "=r"(d) : "r"(codes));
  return d;
#else
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(codes & 0xFFFF), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
#endif
}

FP4W_HD uint32_t f32x2_to_bf16x2(float lo, float hi) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
#else
  const unsigned short l = static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(lo)).x;
  const unsigned short h = static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(hi)).x;
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
#endif
}

// bf16 bits of 2^(c - 127) for an e8m0 code c: c << 7, with code 0 the subnormal 2^-127 and 255 a NaN.
FP4W_HD uint32_t e8m0_bf16_bits(uint32_t c) {
  const uint32_t b = c << 7;
  return c == 0 ? 0x0040u : (c == 255 ? 0x7FC0u : b);
}

// The 16-bit multiplier pair of one block scale, for the weights' MMA type; see the header comment.
template <Weights WF, typename T>
struct BlockScale;

template <>
struct BlockScale<Weights::kNvfp4, __half> {
  static constexpr float kEpilogue = 16384.0f;   // 2^14
  // code: an e4m3 byte in the low 8 bits.
  FP4W_HD static uint32_t splat(uint32_t code) { return e4m3x2_to_f16x2(code * 0x0101u); }
  // The four codes of a scale word at once (an NVFP4 K step uses all four): two conversions, four byte moves.
  FP4W_HD static void splat4(uint32_t word, uint32_t (&s)[4]) {
    const uint32_t lo = e4m3x2_to_f16x2(word & 0xFFFFu), hi = e4m3x2_to_f16x2(word >> 16);
    s[0] = prmt(lo, 0, 0x1010u);
    s[1] = prmt(lo, 0, 0x3232u);
    s[2] = prmt(hi, 0, 0x1010u);
    s[3] = prmt(hi, 0, 0x3232u);
  }
  FP4W_HD static uint32_t apply(uint32_t bits, uint32_t scale) { return mul2<__half>(bits, scale); }
};

template <>
struct BlockScale<Weights::kNvfp4, __nv_bfloat16> {
  static constexpr float kEpilogue = 256.0f;     // 2^8
  FP4W_HD static uint32_t splat(uint32_t code) {
    const __half s = __ushort_as_half(static_cast<unsigned short>(e4m3x2_to_f16x2(code) & 0xFFFFu));
    // s * 2^118 <= 448 * 2^118 < 2^127: in bf16's range; e2m1 * 2^-126 times it is exact (quantum >= 2^-18).
    const float f = __half2float(s) * 0x1p118f;
    return f32x2_to_bf16x2(f, f);
  }
  FP4W_HD static void splat4(uint32_t word, uint32_t (&s)[4]) {
    const uint32_t pairs[2] = {e4m3x2_to_f16x2(word & 0xFFFFu), e4m3x2_to_f16x2(word >> 16)};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half h = __ushort_as_half(static_cast<unsigned short>(pairs[i / 2] >> (16 * (i % 2))));
      const float f = __half2float(h) * 0x1p118f;
      s[i] = f32x2_to_bf16x2(f, f);
    }
  }
  FP4W_HD static uint32_t apply(uint32_t bits, uint32_t scale) {
    return mul2<__nv_bfloat16>(bits, scale);
  }
};

template <>
struct BlockScale<Weights::kMxfp4, __nv_bfloat16> {
  static constexpr float kEpilogue = 1.0f;
  FP4W_HD static uint32_t splat(uint32_t code) {
    const uint32_t b = e8m0_bf16_bits(code);
    return b | (b << 16);
  }
  FP4W_HD static uint32_t apply(uint32_t bits, uint32_t scale) {
    constexpr uint32_t kTwo126 = 0x7E807E80u;    // bf16x2 of 2^126: e2m1 * 2^-126 -> e2m1, exact
    return mul2<__nv_bfloat16>(mul2<__nv_bfloat16>(bits, kTwo126), scale);
  }
};

// ------------------------------------------------------------------------------------------- kernel

// GROUP: 16-deep K steps per wgmma commit group (1, 2 or 4). A group's fragments are decoded before its wgmmas
// are issued and stay untouched until the group completes. DEPTH: groups a warpgroup may leave in flight while
// it decodes the next (1, or 3 with one step per group): fragments have DEPTH + 1 buffers. Larger groups and
// more depth hide more wgmma latency and cost more registers.
template <Weights WF, typename T, int BN, int MT, int STAGES, int GROUP, int DEPTH, int NCW>
struct Gemm {
  static constexpr int kRows = NCW * 64 * MT;                // weight rows of a CTA tile (NCW consumer warpgroups)
  static constexpr int kThreads = 128 * (NCW + 1);
  // Registers a consumer thread may take: what the producer warpgroup leaves of the 64K, a multiple of 8, at
  // most 232 (two consumers: 232; three: 152; four: 112).
  static constexpr int kConsumerRegs = ((65536 - 128 * kProducerRegs) / (128 * NCW) / 8 * 8) < 232
                                           ? ((65536 - 128 * kProducerRegs) / (128 * NCW) / 8 * 8) : 232;
  static constexpr int kGroups = (kRows + kChunkRows - 1) / kChunkRows;
  static constexpr int kXBytes = BN * 128;                   // one swizzled activation tile
  static constexpr int kWBytes = kRows * kWRowBytes;
  static constexpr int kSBytes = kGroups * kChunkBytes;
  static constexpr int kStageBytes = kXBytes + kWBytes + kSBytes;
  static constexpr int kAcc = BN / 2;                        // fp32 accumulators per m64 tile per thread
  static constexpr int kPartialFloats = MT * 64 * BN;        // one consumer's part of a tile
  static constexpr int kBlock = WeightTraits<WF>::kBlock;
  // Dynamic shared memory: the stages, the barriers, and slack to align the base to 1024 bytes.
  static constexpr int kSmemBytes = STAGES * kStageBytes + 2 * STAGES * 8 + 16 + 1024;   // 16: NCW flags
  static_assert(kXBytes % 1024 == 0, "activation tiles must keep the 1024-byte swizzle alignment");
  static_assert(BN % 8 == 0 && BN <= 256, "wgmma N");
  static_assert(GROUP == 1 || GROUP == 2 || GROUP == 4, "K steps per commit group");
  static_assert(DEPTH == 1 || (DEPTH == 3 && GROUP == 1), "groups in flight: 1, or 3 with one step per group");
  static_assert(NCW >= 2 && NCW <= 4, "consumer warpgroups");
  // A tile's rows must start on a 128-row chunk of the blocked scale layout (the consumers index chunks by row).
  static_assert(kRows % kChunkRows == 0, "weight rows per tile: a multiple of 128");
  static constexpr int kBuffers = DEPTH + 1;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory");
  using Scale = BlockScale<WF, T>;
  using Mma = WgmmaRS<T, BN>;
};

// The stream-K split: iteration x = tile * k_steps + K step; CTA c takes [start(c), start(c + 1)).
struct Schedule {
  int64_t total;      // iterations: tiles * k_steps
  int k_steps;
  int grid;
  FP4W_HD int64_t start(int cta) const { return static_cast<int64_t>(cta) * total / grid; }
  // The CTA whose range holds iteration x.
  FP4W_HD int owner(int64_t x) const { return static_cast<int>(((x + 1) * grid + total - 1) / total) - 1; }
  // The K steps [k_first, k_last) of the tile a CTA works on from iteration x, when its range ends at `end`.
  FP4W_HD void segment(int64_t x, int64_t end, int64_t* tile, int* k_first, int* k_last) const {
    *tile = x / k_steps;
    *k_first = static_cast<int>(x % k_steps);
    *k_last = static_cast<int>(*k_first + (end - x) < k_steps ? *k_first + (end - x) : k_steps);
  }
  // Where CTA `cta` leaves its part of a split tile (two per CTA: a range is split at most at both ends): its
  // first part unless the CTA began before the tile.
  FP4W_HD int64_t slot(int cta, int64_t tile) const {
    return 2 * static_cast<int64_t>(cta) + (start(cta) >= tile * k_steps ? 0 : 1);
  }
};

// A tile index -> (activation tile, weight tile, batch); activation tiles vary fastest, so CTAs working at the
// same time share weight tiles through L2 when M spans several tiles.
struct TileCoord {
  int mi, wi, l;
  __device__ TileCoord(int64_t tile, int m_tiles, int w_tiles) {
    mi = static_cast<int>(tile % m_tiles);
    const int64_t rest = tile / m_tiles;
    wi = static_cast<int>(rest % w_tiles);
    l = static_cast<int>(rest / w_tiles);
  }
};

// The ring position of a pipeline stage, advanced without division.
struct Ring {
  int stage = 0;
  uint32_t phase = 0;
  template <int STAGES>
  __device__ __forceinline__ void advance() {
    if (++stage == STAGES) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// One consumer warpgroup: its accumulators, fragment buffers and the K-step loop.
template <Weights WF, typename T, int BN, int MT, int STAGES, int GROUP, int DEPTH, int NCW>
struct Consumer {
  using G = Gemm<WF, T, BN, MT, STAGES, GROUP, DEPTH, NCW>;
  float acc[MT][G::kAcc];
  uint32_t frag[G::kBuffers][GROUP][MT][4];
  int row_base;       // weight row r0 of this thread in m64 tile 0 (r1 = r0 + 8)
  uint32_t sel;       // prmt selector of byte q
  int pending = -1;   // a stage whose last wgmma group may still be reading it
  int lane;

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < G::kAcc; ++r) acc[mt][r] = 0.0f;
  }

  __device__ __forceinline__ void fence_acc() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < G::kAcc; ++r) fence_operand(acc[mt][r]);
  }

  __device__ __forceinline__ void release(uint64_t* empty) {
    if (pending >= 0) {
      // Every wgmma that read the stage has completed: hand its buffers back to the producer.
      if (lane == 0) mbar_arrive(smem_addr(&empty[pending]));
      pending = -1;
    }
  }

  // One 64-deep K step from ring stage `stage`; B is the fragment buffer when a group spans the whole step.
  template <int B>
  __device__ __forceinline__ void k_step(const uint8_t* x_tiles, const uint8_t* w_bufs, const uint8_t* s_tiles,
                                         uint64_t* full, uint64_t* empty, int stage, uint32_t phase, int kstep) {
    mbar_wait(smem_addr(&full[stage]), phase);
    const uint8_t* wsm = w_bufs + stage * G::kWBytes;
    const uint8_t* ssm = s_tiles + stage * G::kSBytes;
    // The packed rows of this K step (8 words each) and the scale words of rows r0 and r1.
    uint4 wv[MT][2][2];
    uint32_t sw[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = row_base + mt * 64 + h * 8;
        const uint4* p = reinterpret_cast<const uint4*>(wsm + r * kWRowBytes);
        wv[mt][h][0] = p[0];
        wv[mt][h][1] = p[1];
        const int rr = r % kChunkRows;
        sw[mt][h] = *reinterpret_cast<const uint32_t*>(ssm + (r / kChunkRows) * kChunkBytes + (rr % 32) * 16 +
                                                       ((rr / 32) % 4) * 4);
      }
    // The block-scale pairs of rows r0 and r1: NVFP4 one per 16-deep step (all four codes of the word), MXFP4 one
    // per two steps (codes (kstep % 2) * 2 and + 1: a chunk's four columns cover two K steps).
    uint32_t sc[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (G::kBlock == 16) {
          G::Scale::splat4(sw[mt][h], sc[mt][h]);
        } else {
          const uint32_t codes = sw[mt][h] >> (16 * (kstep % 2));
          sc[mt][h][0] = G::Scale::splat(codes & 0xFFu);
          sc[mt][h][1] = G::Scale::splat((codes >> 8) & 0xFFu);
        }
      }
    const uint32_t x_base = smem_addr(x_tiles + stage * G::kXBytes);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      constexpr int kGroupsPerStep = 4 / GROUP;
      // Four buffers: one per step of a K step. Two: alternating by group, or by K step when a group spans it.
      const int buf = G::kBuffers == 4 ? j : (kGroupsPerStep == 1 ? B : (j / GROUP) % 2);
      const int slot = j % GROUP;
      const int block = G::kBlock == 16 ? j : j / 2;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t s0 = sc[mt][0][block], s1 = sc[mt][1][block];
        const uint32_t* w0 = reinterpret_cast<const uint32_t*>(&wv[mt][0][0]);
        const uint32_t* w1 = reinterpret_cast<const uint32_t*>(&wv[mt][1][0]);
        uint32_t(&a)[4] = frag[buf][slot][mt];
        a[0] = G::Scale::apply(e2m1_pair_bits<T>(w0[2 * j], sel), s0);       // row r0, k 2q..2q+1
        a[1] = G::Scale::apply(e2m1_pair_bits<T>(w1[2 * j], sel), s1);       // row r1
        a[2] = G::Scale::apply(e2m1_pair_bits<T>(w0[2 * j + 1], sel), s0);   // row r0, k 8+2q..
        a[3] = G::Scale::apply(e2m1_pair_bits<T>(w1[2 * j + 1], sel), s1);   // row r1
      }
      if (slot == GROUP - 1) {
#pragma unroll
        for (int g = 0; g < GROUP; ++g)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 4; ++r) fence_operand(frag[buf][g][mt][r]);
        fence_acc();
        wgmma_fence();
#pragma unroll
        for (int g = 0; g < GROUP; ++g) {
          const uint64_t desc = swizzled_desc(x_base + (j - GROUP + 1 + g) * 32);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) G::Mma::mma(acc[mt], frag[buf][g][mt], desc, 1u);
        }
        wgmma_commit();
        // The group DEPTH back is done: its fragments are free, and once that is the previous K step's last
        // group (at step DEPTH - 1 of this one), so is the previous stage.
        wgmma_wait<DEPTH>();
        fence_acc();
        if (j == (DEPTH == 1 ? GROUP - 1 : DEPTH - 1)) release(empty);
      }
    }
    pending = stage;
  }
};

template <Weights WF, typename T, int BN, int MT, int STAGES, int GROUP, int DEPTH, int NCW>
__global__ void __launch_bounds__(128 * (NCW + 1), 1)
    fp4w_gemm_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                     const Fp4wGemmArgs args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using G = Gemm<WF, T, BN, MT, STAGES, GROUP, DEPTH, NCW>;
  extern __shared__ uint8_t smem_raw[];
  // Offsetting the __shared__ array itself (not a cast integer) keeps every access below in shared space.
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* x_tiles = smem;
  uint8_t* w_bufs = x_tiles + STAGES * G::kXBytes;
  uint8_t* s_tiles = w_bufs + STAGES * G::kWBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(s_tiles + STAGES * G::kSBytes);
  uint64_t* empty = full + STAGES;
  int* last_flag = reinterpret_cast<int*>(empty + STAGES);   // one per consumer warpgroup

  const int warpgroup = threadIdx.x / 128;
  // Everything derived from the arguments is computed after setmaxnreg, in each role: values live across it
  // would be spilled to local memory.
  auto plan = [&](int& m_tiles, int& w_tiles, Schedule& sched, int64_t& begin, int64_t& end) {
    m_tiles = (args.m + BN - 1) / BN;
    w_tiles = (args.n + G::kRows - 1) / G::kRows;
    const int k_steps = (args.k + kBK - 1) / kBK;
    sched = Schedule{static_cast<int64_t>(args.l) * m_tiles * w_tiles * k_steps, k_steps, args.grid};
    begin = sched.start(blockIdx.x);
    end = sched.start(blockIdx.x + 1);
  };
  int m_tiles, w_tiles;
  Schedule sched;
  int64_t begin, end;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_addr(&full[s]), 1);
      mbar_init(smem_addr(&empty[s]), 4 * NCW);   // lane 0 of each consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ---------------------------------------------------------------------------------- producer
    setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x == 0) {
      plan(m_tiles, w_tiles, sched, begin, end);
      // Scale chunks along K: ceil(ceil(K / block) / 4) per 128-row group.
      const int scale_chunks_k = ((args.k / G::kBlock) + 3) / 4;
      const int scale_groups_n = (args.n + kChunkRows - 1) / kChunkRows;
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&w_map)) : "memory");
      // Weights are read once; activation tiles are shared by every CTA working on the same rows of X.
      const uint64_t stream_policy = policy_evict_first();
      const uint64_t reuse_policy = policy_evict_last();
      Ring ring;
      for (int64_t x = begin; x < end;) {
        int64_t tile;
        int k_first, k_last;
        sched.segment(x, end, &tile, &k_first, &k_last);
        const TileCoord at(tile, m_tiles, w_tiles);
        const int group0 = at.wi * G::kRows / kChunkRows;
        const int groups = min(G::kGroups, scale_groups_n - group0);
        const uint8_t* scales = static_cast<const uint8_t*>(args.w_scales) + at.l * args.w_scale_batch +
                                static_cast<int64_t>(group0) * scale_chunks_k * kChunkBytes;
        const uint32_t bytes = G::kXBytes + G::kWBytes + groups * kChunkBytes;
        for (int kstep = k_first; kstep < k_last; ++kstep) {
          mbar_wait(smem_addr(&empty[ring.stage]), ring.phase ^ 1);
          const uint32_t bar = smem_addr(&full[ring.stage]);
          mbar_expect_tx(bar, bytes);
          tma_load_3d(smem_addr(w_bufs + ring.stage * G::kWBytes), &w_map, kstep * kWRowBytes, at.wi * G::kRows,
                      at.l, bar, stream_policy);
          tma_load_3d(smem_addr(x_tiles + ring.stage * G::kXBytes), &x_map, kstep * kBK, at.mi * BN, at.l, bar,
                      reuse_policy);
          // The chunk holding this K step's scales (an MXFP4 chunk covers two K steps).
          const int chunk = kstep * kBK / (4 * G::kBlock);
          for (int g = 0; g < groups; ++g)
            bulk_load(smem_addr(s_tiles + ring.stage * G::kSBytes + g * kChunkBytes),
                      scales + (static_cast<int64_t>(g) * scale_chunks_k + chunk) * kChunkBytes, kChunkBytes, bar);
          ring.advance<STAGES>();
        }
        x += k_last - k_first;
      }
    }
    return;
  }

  // -------------------------------------------------------------------------------------- consumers
  setmaxnreg_inc<G::kConsumerRegs>();
  plan(m_tiles, w_tiles, sched, begin, end);
  const int k_steps = sched.k_steps;
  const int cw = warpgroup - 1;                  // which half of the tile's weight rows
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32;
  Consumer<WF, T, BN, MT, STAGES, GROUP, DEPTH, NCW> c;
  c.lane = tid % 32;
  const int g = c.lane / 4, q = c.lane % 4;
  c.sel = 0x4440u | static_cast<uint32_t>(q);    // byte q of a word, zero-extended
  c.row_base = cw * 64 * MT + warp * 16 + g;

  Ring ring;
  for (int64_t x = begin; x < end;) {
    int64_t tile;
    int k_first, k_last;   // exclusive
    sched.segment(x, end, &tile, &k_first, &k_last);
    c.zero();
    for (int kstep = k_first; kstep < k_last;) {
      // With one group per K step the fragment buffer alternates by step: two steps per pass keep its index a
      // constant.
      c.template k_step<0>(x_tiles, w_bufs, s_tiles, full, empty, ring.stage, ring.phase, kstep);
      ring.advance<STAGES>();
      if (++kstep == k_last) break;
      c.template k_step<1>(x_tiles, w_bufs, s_tiles, full, empty, ring.stage, ring.phase, kstep);
      ring.advance<STAGES>();
      ++kstep;
    }
    wgmma_wait<0>();
    c.fence_acc();
    c.release(empty);

    // ---------------------------------------------------------------------------------- epilogue
    const TileCoord at(tile, m_tiles, w_tiles);
    const int64_t tile_first = tile * k_steps, tile_last = tile_first + k_steps - 1;
    const int first_cta = sched.owner(tile_first), last_cta = sched.owner(tile_last);
    bool write = true;
    if (first_cta != last_cta) {
      // Stream-K: every part goes to the workspace; the last part to arrive sums all parts in K order.
      float* ws = static_cast<float*>(args.workspace);
      auto slot = [&](int cta) { return sched.slot(cta, tile) * NCW + cw; };
      float4* mine = reinterpret_cast<float4*>(ws + slot(blockIdx.x) * G::kPartialFloats);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < G::kAcc; r += 4)
          mine[((mt * G::kAcc + r) / 4) * 128 + tid] =
              make_float4(c.acc[mt][r], c.acc[mt][r + 1], c.acc[mt][r + 2], c.acc[mt][r + 3]);
      __threadfence();
      named_barrier(1 + cw, 128);
      if (tid == 0) {
        const int parts = last_cta - first_cta + 1;
        const int arrived = atomicAdd(&args.counters[tile * NCW + cw], 1) + 1;
        const bool last = arrived == parts;
        if (last) args.counters[tile * NCW + cw] = 0;   // ready for the next launch
        last_flag[cw] = last;
        __threadfence();
      }
      named_barrier(1 + cw, 128);
      write = last_flag[cw] != 0;
      if (write) {
        c.zero();
        for (int cta = first_cta; cta <= last_cta; ++cta) {
          const float4* part = reinterpret_cast<const float4*>(ws + slot(cta) * G::kPartialFloats);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < G::kAcc; r += 4) {
              const float4 v = __ldcg(&part[((mt * G::kAcc + r) / 4) * 128 + tid]);
              c.acc[mt][r] += v.x;
              c.acc[mt][r + 1] += v.y;
              c.acc[mt][r + 2] += v.z;
              c.acc[mt][r + 3] += v.w;
            }
        }
      }
      // The flag is read by every thread before the next tile's epilogue can write it.
      named_barrier(1 + cw, 128);
    }
    if (write) {
      // Accumulator (mt, 4i + 2h + e) holds weight row r0 + 8h (an n of C) and activation row 8i + 2q + e (an m).
      const int64_t n_base = static_cast<int64_t>(at.wi) * G::kRows + c.row_base;
      const int64_t m_base = static_cast<int64_t>(at.mi) * BN + 2 * q;
      uint8_t* out = static_cast<uint8_t*>(args.c);
      const int64_t c_l = at.l * args.c_batch;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < BN / 8; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int64_t n = n_base + mt * 64 + h * 8;
              const int64_t m = m_base + i * 8 + e;
              if (n < args.n && m < args.m) {
                const float v = c.acc[mt][4 * i + 2 * h + e] * G::Scale::kEpilogue;
                const int64_t off = (c_l + m * args.c_row + n * args.c_col) * 2;
                if (args.out_bf16)
                  *reinterpret_cast<__nv_bfloat16*>(out + off) = __float2bfloat16_rn(v);
                else
                  *reinterpret_cast<__half*>(out + off) = __float2half_rn(v);
              }
            }
    }
    x += k_last - k_first;
  }
#endif
}

// -------------------------------------------------------------------------- activations of FP4 x FP4

// Byte `byte` of `word` (two e2m1) times the block scale `code`, exactly: fp16 for NVFP4, bf16 for MXFP4.
template <Weights WF>
FP4W_HD uint32_t dequant_pair(uint32_t word, uint32_t byte, uint32_t code) {
  if constexpr (WF == Weights::kNvfp4) {
    // e2m1 * 2^-14 * s is exact (quantum >= 2^-24); times 2^14 gives e2m1 * s.
    const uint32_t bits = e2m1_pair_bits<__half>(word, 0x4440u | byte);
    return mul2<__half>(mul2<__half>(bits, e4m3x2_to_f16x2(code * 0x0101u)), 0x74007400u);
  } else {
    using S = BlockScale<Weights::kMxfp4, __nv_bfloat16>;
    return S::apply(e2m1_pair_bits<__nv_bfloat16>(word, 0x4440u | byte), S::splat(code));
  }
}

// Per thread one 16-byte run of packed A (32 elements) -> 32 exact 16-bit values (fp16 NVFP4, bf16 MXFP4).
template <Weights WF, typename T>
__global__ void fp4w_dequant_kernel(const Fp4wDequantArgs args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kBlock = WeightTraits<WF>::kBlock;
  const int runs = args.k / 32;
  const int64_t total = static_cast<int64_t>(args.l) * args.m * runs;
  const int scale_chunks_k = ((args.k / kBlock) + 3) / 4;
  const uint8_t* a = static_cast<const uint8_t*>(args.a);
  const uint8_t* sf = static_cast<const uint8_t*>(args.a_scales);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int run = static_cast<int>(idx % runs);
    const int64_t row_l = idx / runs;
    const int r = static_cast<int>(row_l % args.m);
    const int l = static_cast<int>(row_l / args.m);
    const uint4 packed = *reinterpret_cast<const uint4*>(a + l * args.a_batch + r * args.a_row + run * 16);
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    const uint8_t* sf_row = sf + l * args.a_scale_batch + static_cast<int64_t>(r / kChunkRows) * scale_chunks_k * kChunkBytes +
                            (r % 32) * 16 + ((r / 32) % 4) * 4;
    uint32_t out[16];
#pragma unroll
    for (int b = 0; b < 16; ++b) {
      const int kb = (run * 32 + 2 * b) / kBlock;   // the block of this byte's two elements
      const uint32_t code = sf_row[(kb / 4) * kChunkBytes + kb % 4];
      out[b] = dequant_pair<WF>(words[b / 4], b % 4, code);
    }
    uint4* dst = reinterpret_cast<uint4*>(static_cast<uint8_t*>(args.x) +
                                          ((static_cast<int64_t>(l) * args.m + r) * args.k + run * 32) * 2);
#pragma unroll
    for (int v = 0; v < 4; ++v) dst[v] = make_uint4(out[4 * v], out[4 * v + 1], out[4 * v + 2], out[4 * v + 3]);
  }
#endif
}

// ------------------------------------------------------------------------------------------------ host

inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// 3-D map (inner, rows, batch) with the given box; strides in bytes.
inline int make_map(CUtensorMap* map, CUtensorMapDataType type, const void* base, uint64_t inner, uint64_t rows,
                    uint64_t batch, uint64_t row_stride, uint64_t batch_stride, uint32_t box_inner, uint32_t box_rows,
                    CUtensorMapSwizzle swizzle) {
  auto encode = encode_fn();
  if (!encode) return 1;
  const cuuint64_t dims[3] = {inner, rows, batch};
  // A batch of one gets a stride that satisfies the encoder; it is never stepped over.
  const cuuint64_t strides[2] = {row_stride, batch > 1 ? batch_stride : row_stride * rows};
  const cuuint32_t box[3] = {box_inner, box_rows, 1};
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r = encode(map, type, 3, const_cast<void*>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? 0 : 2;
}

// Status codes of the C entry points (fp4w_status_string names them).
enum Status : int {
  kOk = 0,
  kNoEncoder = 1,
  kBadMap = 2,
  kBadShape = 3,
  kLaunchFailed = 4,
};

template <Weights WF, typename T, int BN, int MT, int STAGES, int GROUP, int DEPTH, int NCW>
struct Launcher {
  using G = Gemm<WF, T, BN, MT, STAGES, GROUP, DEPTH, NCW>;

  static int check(const Fp4wGemmArgs& a) {
    if (a.m <= 0 || a.n <= 0 || a.k <= 0 || a.l <= 0 || a.k % 32 != 0 || a.grid <= 0) return kBadShape;
    return kOk;
  }

  static int64_t tiles(const Fp4wGemmArgs& a) {
    return static_cast<int64_t>(a.l) * ((a.m + BN - 1) / BN) * ((a.n + G::kRows - 1) / G::kRows);
  }

  static size_t workspace_size(const Fp4wGemmArgs& a) {
    return static_cast<size_t>(a.grid) * 2 * NCW * G::kPartialFloats * sizeof(float);
  }

  static int64_t counter_count(const Fp4wGemmArgs& a) { return tiles(a) * NCW; }

  static int run(const Fp4wGemmArgs& a, cudaStream_t stream) {
    if (int s = check(a)) return s;
    CUtensorMap x_map, w_map;
    const CUtensorMapDataType xt =
        std::is_same<T, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    if (int s = make_map(&x_map, xt, a.x, a.k, a.m, a.l, a.x_row * 2, a.x_batch * 2, kBK, BN,
                         CU_TENSOR_MAP_SWIZZLE_128B))
      return s;
    if (int s = make_map(&w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, a.w, a.k / 2, a.n, a.l, a.w_row, a.w_batch,
                         kWRowBytes, G::kRows, CU_TENSOR_MAP_SWIZZLE_NONE))
      return s;
    auto kernel = fp4w_gemm_kernel<WF, T, BN, MT, STAGES, GROUP, DEPTH, NCW>;
    // Once per process: outside any stream capture after the first (untimed) call, and no host cost after it.
    static const bool smem_ok =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, G::kSmemBytes) == cudaSuccess;
    if (!smem_ok) return kLaunchFailed;
    const int64_t iterations = tiles(a) * ((a.k + kBK - 1) / kBK);
    Fp4wGemmArgs launch_args = a;
    launch_args.grid = static_cast<int32_t>(iterations < a.grid ? iterations : a.grid);
    kernel<<<launch_args.grid, G::kThreads, G::kSmemBytes, stream>>>(x_map, w_map, launch_args);
    return cudaGetLastError() == cudaSuccess ? kOk : kLaunchFailed;
  }
};

template <Weights WF, typename T>
int run_dequant(const Fp4wDequantArgs& a, cudaStream_t stream) {
  if (a.m <= 0 || a.k <= 0 || a.l <= 0 || a.k % 32 != 0) return kBadShape;
  const int64_t total = static_cast<int64_t>(a.l) * a.m * (a.k / 32);
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  fp4w_dequant_kernel<WF, T><<<static_cast<int>(blocks < 65535 * 8 ? blocks : 65535 * 8), threads, 0, stream>>>(a);
  return cudaGetLastError() == cudaSuccess ? kOk : kLaunchFailed;
}

}  // namespace fp4w
