"""Exact FP4 GEMMs in Triton: dequantize in registers, multiply on fp16/bf16/fp8 tensor cores, fp32 accumulation.

  common.py    shared @triton.jit helpers (decoding, blocked-scale loads, split-K bookkeeping)
  gemm.py      the fp16/bf16 tile kernel and the one-pass operand dequantizer
  gemm_fp8.py  the fp8 tile kernel (exponent folding, per-tile fallback to bf16)
  launch.py    launch configurations, split-K choice, workspaces, the launch
  kernel.py    the `Kernel` entry: configuration choice (tuned table or heuristic) and prepare
The registered kernels are in fp4bench/kernels/sm90.py (Hopper) and triton_portable.py (any GPU, the CPU).
Design, exactness argument and measurements: .notes/hopper.md.
"""
