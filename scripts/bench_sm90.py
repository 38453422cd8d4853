"""Verify and time fp4bench's Hopper Triton kernels in one device call; prints a short table last.

Usage (on the GPU machine, in the repository root):
    PYTHONUNBUFFERED=1 python scripts/bench_sm90.py --out $OUT [--budget 380] [--skip-verify]
Sections, each skipped once the time budget is spent (the summary always prints):
  1. verify: every sm90-* kernel and triton-fp4 on shapes/verify.yml (fresh random data, poisoned output);
  2. extreme scales: MXFP4 block exponents spread over +-7, +-20, +-60 binades and NVFP4 scales over every
     finite e4m3 byte, for every kernel of the format;
  3. timing: the competition's three benchmark shapes, cold L2 (triton.testing.do_bench clears L2 before
     each call), median, against cuBLAS bf16 and fp16 on already-dequantized operands and the fp16 floor;
  4. the compiled kernels' registers, spills and wgmma count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp4bench.arch import current_target  # noqa: E402
from fp4bench.checking import check_output  # noqa: E402
from fp4bench.codecs import dequantize  # noqa: E402
from fp4bench.formats import E8M0_BIAS, GEMM_FORMATS  # noqa: E402
from fp4bench.harness import verify_case  # noqa: E402
from fp4bench.kernels import all_kernels  # noqa: E402
from fp4bench.problem import Shape, assemble, generate, poison_output  # noqa: E402
from fp4bench.reference import reference_gemm  # noqa: E402
from fp4bench.shapes import load_shapes  # noqa: E402

BENCH_SHAPES = (Shape(128, 7168, 16384), Shape(128, 4096, 7168), Shape(128, 7168, 2048))
FP16_TENSOR_RATE = 790e12    # measured bf16/fp16 dense rate on an H200 (shared/README.md)
KERNEL_FORMATS = (
    ("sm90-nvfp4", "nvfp4"), ("sm90-mxfp4", "mxfp4"), ("sm90-mxfp4-fp8", "mxfp4"),
    ("sm90-w4a16", "w4a16-nvfp4"), ("sm90-w4a16", "w4a16-mxfp4"),
    ("triton-fp4", "nvfp4"), ("triton-fp4", "mxfp4"),
)
MX_SPREADS = (1, 7, 20, 60)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


def log(msg: str, fh) -> None:
    print(msg)
    fh.write(msg + "\n")
    fh.flush()


def extreme_problem(shape: Shape, fmt_name: str, spread: int | None, device) -> object:
    """A random problem whose scales are extreme: MX exponents in [-spread, spread], or every finite e4m3."""
    fmt = GEMM_FORMATS[fmt_name]
    p = generate(shape, fmt, device)
    a, b, sfa, sfb = p.data[:4]
    g = torch.Generator(device="cpu").manual_seed(shape.seed + 17)

    def scales(like):
        if like is None:
            return None
        shp = (like.shape[2], like.shape[0], like.shape[1])
        if fmt.b.scale.power_of_two:
            codes = torch.randint(E8M0_BIAS - spread, E8M0_BIAS + spread + 1, shp, generator=g)
        else:
            codes = torch.randint(0, 0x7F, shp, generator=g)   # every finite positive e4m3 byte (0x7F is NaN)
            codes = codes | (torch.randint(0, 2, shp, generator=g) << 7)
        return codes.to(torch.uint8).to(device).view(like.dtype).permute(1, 2, 0)

    return assemble(shape, fmt, a, b, scales(sfa), scales(sfb), p.c, device)


def check_exact_products(out: torch.Tensor, problem) -> tuple[bool, str]:
    """Pass when `out` matches the fp32 reference, or, where the sums are ill-conditioned (extreme scales make
    huge terms cancel, so the fp32 reference itself is off), when it lies within the fp32 accumulation bound
    of the float64 result: |out - ref64| <= K * 2^-23 * (|A| @ |B|^T) + the output dtype's rounding.
    That bound holds only if every product is exact, which is what the kernels claim."""
    res = check_output(out, reference_gemm(problem), problem.fmt.out_dtype)
    if res.passed:
        return True, res.summary()
    from fp4bench.reference import dequantize_operands

    ref64 = reference_gemm(problem, torch.float64)
    absprod = torch.empty_like(ref64)
    for i in range(problem.shape.l):
        da, db = dequantize_operands(problem, i)
        absprod[:, :, i] = da.double().abs() @ db.double().abs().T
    ulp = torch.finfo(problem.fmt.out_dtype).eps   # one unit in the last place, relative
    bound = problem.shape.k * 2.0 ** -23 * absprod + ulp * ref64.abs() + 1e-30
    got = out.double().to(ref64.device)
    # Overflow is judged on the result rounded to the output dtype, as the kernel's store rounds it.
    rounded = ref64.to(problem.fmt.out_dtype).double()
    nan_ok = torch.isnan(got) == torch.isnan(rounded)
    finite = torch.isfinite(got) & torch.isfinite(rounded)
    inf_ok = (torch.isinf(got) == torch.isinf(rounded)) & (~torch.isinf(got) | (torch.sign(got) == torch.sign(rounded)))
    within = ~finite | ((got - ref64).abs() <= bound)
    ok = bool((nan_ok & inf_ok & within).all())
    return ok, f"fp32 reference: {res.reason}; within the fp32 accumulation bound of float64: {ok}"


def check_problem(kernel, problem) -> tuple[bool, str]:
    fn = kernel.prepare(problem)
    poisoned = poison_output(problem)
    out = fn(poisoned.data)
    torch.cuda.synchronize()
    return check_exact_products(out, problem)


def dense_operands(problem, dtype):
    a, b, sfa, sfb = problem.data[:4]
    fmt = problem.fmt
    da = dequantize(a[:, :, 0], None if sfa is None else sfa[:, :, 0], fmt.a).to(dtype)
    db = dequantize(b[:, :, 0], None if sfb is None else sfb[:, :, 0], fmt.b).to(dtype)
    return da.contiguous(), db.contiguous()


def fp8_fit_experiment(fh, results) -> None:
    """How wide a residual the fp8 MMA adds exactly: the fp8 kernel with several FIT limits on data whose
    block exponents spread over +-1 and +-3 binades (random data of the standard generator: +-3)."""
    from fp4bench.kernels.sm90_triton import GPU_CONFIGS, launch_gemm, plan_launch

    for spread in (1, 3):
        shape = Shape(128, 512, 4096, seed=21)
        p = extreme_problem(shape, "mxfp4", spread, "cuda")
        plan = plan_launch(GPU_CONFIGS[0], shape.m, shape.n, shape.k, shape.l, torch.device("cuda"))
        for fit in (2, 3, 4, 5, 8, 15):
            out = launch_gemm(poison_output(p).data, p.fmt, plan, use_asm=True, fp8=True, fp8_fit=fit)
            torch.cuda.synchronize()
            res = check_output(out, reference_gemm(p), p.fmt.out_dtype)
            results.setdefault("fp8_fit", []).append([spread, fit, res.passed, res.mismatches, res.max_abs_err])
            log(f"fp8 fit experiment: spread {spread} fit {fit}: {'PASS' if res.passed else 'FAIL'} "
                f"{res.mismatches} mismatches, max abs {res.max_abs_err:.3g}", fh)


def bench_ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def compiled_report(fh) -> None:
    from fp4bench.kernels import sm90_triton as mod

    for jit_fn in (mod._fp4_gemm_kernel, mod._mx_fp8_kernel):
        caches = getattr(jit_fn, "device_caches", {})
        for dev_cache in caches.values():
            kernels = dev_cache[0] if isinstance(dev_cache, tuple) else dev_cache
            for key, ck in list(kernels.items())[:12]:
                ptx = ck.asm.get("ptx", "") if hasattr(ck, "asm") else ""
                consts = {k: v for k, v in getattr(ck.src, "constants", {}).items()} if hasattr(ck, "src") else {}
                log(f"  {jit_fn.fn.__name__}: regs {getattr(ck, 'n_regs', '?')} spills {getattr(ck, 'n_spills', '?')} "
                    f"smem {getattr(ck.metadata, 'shared', '?')} wgmma {ptx.count('wgmma.mma_async')} "
                    f"consts {str(consts)[:200]}", fh)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--budget", type=float, default=380.0)
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--kernels", default="", help="comma-separated subset of kernel names")
    args = ap.parse_args()
    budget = Budget(args.budget)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / "bench_sm90.log", "w")
    target = current_target("cuda")
    import triton

    props = torch.cuda.get_device_properties(0)
    log(f"GPU {props.name}, {props.multi_processor_count} SMs, L2 {props.L2_cache_size >> 20} MiB; "
        f"torch {torch.__version__}, triton {triton.__version__}", fh)
    kernels = all_kernels()
    pairs = [(k, f) for k, f in KERNEL_FORMATS if k in kernels and (not args.kernels or k in args.kernels.split(","))]
    results: dict = {"gpu": props.name, "verify": [], "extreme": [], "timing": []}
    failures = 0

    if not args.skip_verify:
        shapes = load_shapes("shapes/verify.yml")
        for name, fmt_name in pairs:
            for shape in shapes:
                if budget.left() < 200:
                    log(f"verify: budget low, stopping before {name} {fmt_name} {shape}", fh)
                    break
                o = verify_case(kernels[name], shape, GEMM_FORMATS[fmt_name], target, [shape.seed])
                failures += o.failed
                results["verify"].append([name, fmt_name, str(shape), o.status, o.reason])
                if o.status != "pass":
                    log(f"verify {name} {fmt_name} {shape}: {o.status} {o.reason}", fh)
            log(f"verify {name} {fmt_name}: done ({budget.left():.0f} s left)", fh)

        ext_shapes = (Shape(200, 520, 2048, seed=5), Shape(128, 256, 8192, seed=9))
        for name, fmt_name in pairs:
            if fmt_name.endswith("nvfp4"):
                spreads = (None,)
            else:
                spreads = MX_SPREADS
            for spread in spreads:
                for shape in ext_shapes:
                    if budget.left() < 170:
                        break
                    try:
                        ok, detail = check_problem(kernels[name], extreme_problem(shape, fmt_name, spread, "cuda"))
                    except Exception as e:  # report and go on: one broken kernel must not hide the rest
                        ok, detail = False, f"{type(e).__name__}: {str(e)[:300]}"
                    failures += not ok
                    results["extreme"].append([name, fmt_name, spread, str(shape), ok, detail])
                    log(f"extreme {name} {fmt_name} spread={spread} {shape}: {'PASS' if ok else 'FAIL'} {detail}", fh)

    if "sm90-mxfp4-fp8" in kernels and budget.left() > 150:
        try:
            fp8_fit_experiment(fh, results)
        except Exception as e:
            log(f"fp8 fit experiment failed: {type(e).__name__}: {str(e)[:300]}", fh)

    rows = []
    for shape in BENCH_SHAPES:
        floor_us = shape.flops / FP16_TENSOR_RATE * 1e6
        base = generate(shape, GEMM_FORMATS["nvfp4"], "cuda")
        da, db = dense_operands(base, torch.bfloat16)
        cublas_bf16 = bench_ms(lambda: torch.mm(da, db.T)) * 1e3
        da16, db16 = da.half(), db.half()
        cublas_fp16 = bench_ms(lambda: torch.mm(da16, db16.T)) * 1e3
        del da, db, da16, db16
        row = {"shape": str(shape), "floor_fp16_us": floor_us, "cublas_bf16_us": cublas_bf16,
               "cublas_fp16_us": cublas_fp16}
        log(f"{shape}: fp16 floor {floor_us:.1f} us, cuBLAS bf16 {cublas_bf16:.1f} us, fp16 {cublas_fp16:.1f} us", fh)
        for name, fmt_name in pairs:
            if budget.left() < 25:
                log("timing: budget spent", fh)
                break
            key = f"{name}:{fmt_name}"
            try:
                p = generate(shape, GEMM_FORMATS[fmt_name], "cuda")
                t0 = time.time()
                fn = kernels[name].prepare(p)
                ok, detail = check_problem(kernels[name], p)
                us = bench_ms(lambda: fn(p.data)) * 1e3
                row[key] = us
                k_obj = kernels[name]
                log(f"  {key}: {us:.1f} us ({floor_us / us * 100:.0f}% of fp16 floor, {cublas_bf16 / us:.2f}x cuBLAS "
                    f"bf16) check {'ok' if ok else 'FAIL ' + detail}; prepare {time.time() - t0:.1f} s; plan "
                    f"{k_obj._plans.get(k_obj._key(p.data, p.fmt))}", fh)
                for ms, plan in getattr(k_obj, "tuning", {}).get(k_obj._key(p.data, p.fmt), []):
                    log(f"      tuned {ms * 1e3:.1f} us  {plan}", fh)
                failures += not ok
            except Exception as e:
                row[key] = None
                log(f"  {key}: ERROR {type(e).__name__}: {str(e)[:400]}", fh)
                failures += 1
        rows.append(row)
        results["timing"].append(row)

    try:
        compiled_report(fh)
    except Exception as e:
        log(f"compiled report failed: {e}", fh)
    (out_dir / "bench_sm90.json").write_text(json.dumps(results, indent=1, default=str))

    log("\n=== summary (median us, cold L2) ===", fh)
    keys = [f"{k}:{f}" for k, f in pairs]
    log("shape | floor | cuBLAS bf16 | " + " | ".join(keys), fh)
    geo = {k: [] for k in ["floor_fp16_us", "cublas_bf16_us"] + keys}
    for r in rows:
        cells = [f"{r[k]:.1f}" if r.get(k) else "-" for k in keys]
        log(f"{r['shape']} | {r['floor_fp16_us']:.1f} | {r['cublas_bf16_us']:.1f} | " + " | ".join(cells), fh)
        for k in geo:
            if r.get(k):
                geo[k].append(r[k])
    log("geomean | " + " | ".join(
        f"{k}={math.exp(sum(map(math.log, v)) / len(v)):.1f}" for k, v in geo.items() if len(v) == len(rows)), fh)
    log(f"verify/extreme/timing failures: {failures}", fh)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
