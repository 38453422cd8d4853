"""Instruction counts of the sm90 CUDA kernels' main loop, read from the compiled library's SASS (no GPU).

    python scripts/sass_loop_report.py [LIBRARY.so]      (default: build or find the library in the cache)
For every configuration: the consumer loop's instructions per 64-deep K step, its HGMMAs, and the integer
(ALU: LOP3, SHF, PRMT, SEL, IADD3, ...) and FMA-pipe (IMAD, HMUL2) instructions per packed weight byte a
thread decodes (16 bytes per m64 tile per K step). The loop is the backward-branch span with the most HGMMAs; it holds two K steps (the loop is unrolled by two).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp4bench.build import build, find_cuobjdump  # noqa: E402
from fp4bench.kernels.sm90_wgmma import LIBRARY, MAINLOOPS, TILES  # noqa: E402

ALU = ("LOP3", "SHF", "PRMT", "SEL", "IADD3", "ISETP", "LEA", "FLO", "BFE", "BMSK", "VIADD")
FMA = ("IMAD", "HMUL2", "HFMA2", "FMUL", "FFMA", "F2FP", "HADD2")


def loop_body(function: str) -> list[str]:
    """The instructions of the backward-branch span holding the most HGMMAs: the consumer's main loop."""
    ins = [(int(m.group(1), 16), m.group(2).strip())
           for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", function)]
    best: list[str] = []
    for a, t in ins:
        m = re.search(r"BRA (0x[0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a:
            span = [u for b, u in ins if int(m.group(1), 16) <= b <= a]
            if sum("HGMMA" in u for u in span) > sum("HGMMA" in u for u in best):
                best = span
    return best


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else str(build(LIBRARY))
    sass = subprocess.run([find_cuobjdump(), "-sass", path], capture_output=True, text=True, check=True).stdout
    functions = {f.split("\n", 1)[0]: f for f in re.split(r"\n\s*Function : ", sass)[1:]}
    print(f"{'configuration':32} {'instr/step':>10} {'HGMMA/step':>10} {'ALU/byte':>9} {'FMA-pipe/byte':>13}")
    for mainloop in MAINLOOPS:
        for tile in TILES:
            name = next(n for n in functions if "fp4w_gemm_kernel" in n
                        and f"Li{tile.bn}ELi{tile.mt}ELi{tile.stages}ELi{tile.group}ELi{tile.depth}ELi{tile.ncw}EE" in n
                        and ("13__nv_bfloat16" in n) == (mainloop.mma == "bf16")
                        and f"WeightsE{0 if mainloop.weights == 'nvfp4' else 1}" in n)
            body = loop_body(functions[name])
            ops = Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
            steps = 2
            weight_bytes = steps * 16 * tile.mt   # per thread: 2 rows x 8 words of one byte, per m64 tile
            alu = sum(v for k, v in ops.items() if k.startswith(ALU))
            fma = sum(v for k, v in ops.items() if k.startswith(FMA))
            print(f"{mainloop.config(tile):32} {len(body) / steps:>10.0f} {ops['HGMMA'] / steps:>10.0f} "
                  f"{alu / weight_bytes:>9.2f} {fma / weight_bytes:>13.2f}")


if __name__ == "__main__":
    main()
