"""Cross-check fp4bench's timer against triton.testing.do_bench on the same call (needs a CUDA GPU).

For each shape: cublas-dense's prepared call on one NVFP4 input, timed by fp4bench.timing.measure (eager,
cold L2) twice and by do_bench (which also flushes L2 and takes per-call events) once. Passes when the two
fp4bench medians agree within 2% and fp4bench's median agrees with do_bench's within 5%. Also prints the
graph-mode and warm-L2 medians for reference (no bound: they measure different things).
Exit 0 on agreement, 1 otherwise.

    python scripts/check_timing.py [--shapes shapes/task.yml] [--group benchmarks]
    python scripts/check_timing.py --compare run1.json run2.json [--kernel cublas-dense]
The second form compares two `fp4bench run --json` files case by case (medians within 2%).
"""

from __future__ import annotations

import argparse
import sys

import torch


def compare(path1: str, path2: str, kernel: str) -> int:
    from fp4bench.results import load_results

    def medians(path):
        return {(c["format"], str(sorted(c["shape"].items()))): c["timing"]["stats"]["median"]
                for c in load_results(path)["cases"] if c["kernel"] == kernel and c.get("timing")}

    a, b = medians(path1), medians(path2)
    common = sorted(set(a) & set(b))
    worst = 0.0
    for key in common:
        diff = 100 * abs(a[key] - b[key]) / a[key]
        worst = max(worst, diff)
        print(f"{key[0]:>6} {key[1]:>70} {a[key] * 1e6:9.2f} {b[key] * 1e6:9.2f} {diff:6.2f}%")
    print(f"{kernel}: {len(common)} common cases, worst difference {worst:.2f}%")
    return 0 if common and worst <= 2.0 else 1


def main() -> int:
    from triton.testing import do_bench

    from fp4bench.device import query_device
    from fp4bench.formats import gemm_format
    from fp4bench.kernels import get_kernel
    from fp4bench.problem import generate
    from fp4bench.shapes import load_shapes
    from fp4bench.timing import MODE_GRAPH, StoppingRule, measure

    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="shapes/task.yml")
    ap.add_argument("--group", action="append", default=["benchmarks"])
    ap.add_argument("--format", default="nvfp4")
    ap.add_argument("--compare", nargs=2, metavar="JSON")
    ap.add_argument("--kernel", default="cublas-dense")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare, args.kernel)
    if not torch.cuda.is_available():
        print("check_timing needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    l2 = query_device(0).l2_bytes
    fmt = gemm_format(args.format)
    kernel = get_kernel("cublas-dense")
    rule = StoppingRule(budget_s=2.0)
    ok = True
    print(f"{'shape':>18} {'run1 us':>9} {'run2 us':>9} {'1v2 %':>6} {'do_bench':>9} {'vs db %':>7} "
          f"{'graph us':>9} {'warm us':>8} {'n1':>5}")
    for shape in load_shapes(args.shapes, tuple(args.group)):
        problem = generate(shape, fmt, device)
        fn = kernel.prepare(problem)
        data = kernel.prepare_inputs(problem, problem.data)   # the dense operands, outside the timed calls
        m1 = measure(fn, [data], device=device, rule=rule, cold_l2=True, l2_bytes=l2).stats
        m2 = measure(fn, [data], device=device, rule=rule, cold_l2=True, l2_bytes=l2).stats
        db = do_bench(lambda fn=fn, data=data: fn(data), warmup=25, rep=200, return_mode="median") * 1e-3
        graph = measure(fn, [data], device=device, rule=rule, mode=MODE_GRAPH, cold_l2=False, l2_bytes=l2).stats
        warm = measure(fn, [data], device=device, rule=rule, cold_l2=False, l2_bytes=l2).stats
        d12 = 100 * abs(m1.median - m2.median) / m1.median
        ddb = 100 * (m1.median - db) / db
        ok &= d12 <= 2.0 and abs(ddb) <= 5.0
        print(f"{str(shape):>18} {m1.median * 1e6:9.2f} {m2.median * 1e6:9.2f} {d12:6.2f} {db * 1e6:9.2f} "
              f"{ddb:7.2f} {graph.median * 1e6:9.2f} {warm.median * 1e6:8.2f} {m1.n:5d}")
    print("AGREE" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
