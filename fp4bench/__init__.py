"""fp4bench: benchmark and correctness validation for block-scaled FP4 GEMM (NVFP4, MXFP4) on NVIDIA GPUs."""

__version__ = "0.1.0"
