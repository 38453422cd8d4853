// The entry points shared by every configuration: status strings, and the exact dequantization of FP4 x FP4
// activations (A) into the 16-bit operand the GEMM reads.
#include "fp4w_gemm.cuh"

extern "C" {

const char* fp4w_status_string(int status) {
  switch (status) {
    case fp4w::kOk: return "ok";
    case fp4w::kNoEncoder: return "the CUDA driver offers no cuTensorMapEncodeTiled";
    case fp4w::kBadMap: return "a TMA descriptor could not be encoded (alignment or strides)";
    case fp4w::kBadShape: return "unsupported shape (K must be a multiple of 32)";
    case fp4w::kLaunchFailed: return cudaGetErrorString(cudaGetLastError());
    default: return "unknown status";
  }
}

int fp4w_dequant_nvfp4(const Fp4wDequantArgs* args, void* stream) {
  return fp4w::run_dequant<fp4w::Weights::kNvfp4, __half>(*args, static_cast<cudaStream_t>(stream));
}

int fp4w_dequant_mxfp4(const Fp4wDequantArgs* args, void* stream) {
  return fp4w::run_dequant<fp4w::Weights::kMxfp4, __nv_bfloat16>(*args, static_cast<cudaStream_t>(stream));
}

}  // extern "C"
