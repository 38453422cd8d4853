"""`fp4bench verify --sanitize TOOL`: every checked case once more, in a child process under NVIDIA compute-sanitizer.

A kernel can pass every value check and still be wrong: read past the end of an operand (the bytes happen to
be mapped and the values are discarded), race on shared memory, or read memory it never wrote. Such a kernel
crashes or corrupts data in a real model, where the neighbouring memory differs. The tools:
  memcheck   out-of-bounds and misaligned accesses to global, local and shared memory, device-side errors
  racecheck  shared-memory data races (a missing __syncthreads)
  initcheck  reads of global memory nothing wrote (a torch.empty workspace read before it is filled)
  synccheck  invalid uses of barriers (__syncthreads in divergent code)

One pass per (case, tool): `compute-sanitizer --tool TOOL ... python -m fp4bench.sanitize IN OUT` runs
`sanitized_call` in a fresh process; the passes of one case run side by side (`Sanitizer.finish`, the hook the
runner calls after each case on that case's GPU). Constraints that make its findings mean something:
  * torch's caching allocator is off (PYTORCH_NO_CUDA_MEMORY_CACHING=1), so every tensor is a cudaMalloc of
    its exact size: with the cache on, an operand sits inside a larger mapped segment and an overread of it
    is a valid access as far as the sanitizer can tell.
  * every operand and the output are copied into an allocation of their own, exactly their extent, and
    memcheck pads every allocation with `PADDING_BYTES` that no allocation owns (`--padding`): a read up to
    that far past an operand leaves its allocation whatever the driver placed next to it.
  * inputs are drawn on the CPU and copied in (a memcpy, no kernel), the output is poisoned with NaN on the
    CPU: between the start of the process and the kernel under test no torch kernel runs on the GPU, so a
    racecheck or initcheck report can only come from what the kernel itself launches (its `prepare` and
    its call). Values are not checked here: the plain check of the same case already did that.
  * one call of the kernel (its first: compilation and warm-up launches inside it are legal, only slow), then
    its result copied to the host once, as a caller reads it: initcheck reports the elements of a fresh
    (torch.empty) output the kernel never wrote.
A finding fails the case with the first report (kind, kernel, address relative to the operand it hit when
the worker recorded one near it); the full report is kept in a log file per case and tool. "Program hit
<error> on CUDA API call" reports are not findings: torch and the CUDA libraries probe the API and expect
errors; a launch of the kernel that fails raises in the worker, which is reported as such.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
DEFAULT_TOOL = "memcheck"
EXECUTABLE = "compute-sanitizer"
# Where compute-sanitizer is looked for after PATH: $CUDA_HOME/bin, then the toolkit's usual home.
FALLBACK_DIRS = ("$CUDA_HOME/bin", "/usr/local/cuda/bin")
# memcheck pads every allocation with this many bytes no allocation owns: reads this far past an operand are caught.
PADDING_BYTES = 1 << 20
# Reports printed per pass; the summary still counts every error.
PRINT_LIMIT = 100
# Exit code the sanitizer returns when it reported an error (a value no Python process exits with by itself).
FOUND_EXIT = 86
# Findings of a pass kept in the results (the log has all of them).
KEPT_FINDINGS = 20
# Operand names in the order of the competition's input tuple, then the output.
OPERANDS = ("a", "b", "sfa", "sfb", "sfa_permuted", "sfb_permuted", "c")
RETURNED = "the returned tensor"
# The environment that disables torch's caching allocator in the sanitized process; an allocator configuration
# of the user's (cudaMallocAsync pools, expandable segments) would bring suballocations back, so it is dropped.
NO_CACHING = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
ALLOCATOR_CONFIG_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


class SanitizerMissing(RuntimeError):
    pass


def parse_tools(values) -> tuple[str, ...]:
    """--sanitize values (repeatable, comma-separated) -> tools in the order given, without repeats."""
    tools: list[str] = []
    for value in values:
        for name in (x.strip().lower() for x in str(value).split(",")):
            if not name:
                continue
            if name not in TOOLS:
                raise ValueError(f"--sanitize: unknown tool {name!r}; choose from {', '.join(TOOLS)}")
            if name not in tools:
                tools.append(name)
    return tuple(tools)


def find_sanitizer() -> str:
    """The compute-sanitizer executable: on PATH, then in each of FALLBACK_DIRS ($CUDA_HOME/bin, /usr/local/cuda/bin).

    Raises SanitizerMissing naming every place it looked."""
    cuda_home = os.environ.get("CUDA_HOME")
    found = shutil.which(EXECUTABLE)
    if found:
        return found
    looked = ["PATH"]
    for entry in FALLBACK_DIRS:
        if entry.startswith("$CUDA_HOME"):
            if not cuda_home:
                looked.append("$CUDA_HOME/bin (unset)")
                continue
            entry = entry.replace("$CUDA_HOME", cuda_home)
        looked.append(entry)
        candidate = Path(entry) / EXECUTABLE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SanitizerMissing(f"--sanitize: compute-sanitizer (CUDA toolkit) not found in {', '.join(looked)}")


# ---------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One report of the sanitizer: what, in which kernel, where."""

    tool: str
    kind: str                      # "Invalid __global__ read of size 1 bytes", "Race reported between ..."
    kernel: str | None = None      # the device function the report names (full name)
    address: int | None = None
    where: str | None = None       # the address relative to an operand: "65535 bytes past the end of b"
    fatal: bool = True             # racecheck warnings are not
    nearest: tuple[int, int] | None = None   # (base, size) of the allocation the sanitizer found nearest
    out_of_bounds: bool = False    # the sanitizer said the address is outside every allocation

    def summary(self) -> str:
        text = f"{self.tool}: {self.kind}"
        if self.kernel:
            text += f" in {short_kernel_name(self.kernel)}"
        if self.where:
            text += f" at {self.where}"
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nearest"] = list(self.nearest) if self.nearest else None
        return d


_PREFIX = re.compile(r"^=+( ?)(.*)$")
_MEMORY_ERROR = re.compile(r"^(Invalid __\w+__ \w+ of size \d+ bytes?|Misaligned .*|Out-of-range .*|"
                           r"Malloc/Free error.*|Host API memory access error.*|Warp .*|Lane .*|"
                           r"Device-side assert.*|Hardware exception.*)$")
_UNINITIALIZED = re.compile(r"^(Uninitialized __\w+__ memory read of size \d+ bytes?.*)$")
_RACE = re.compile(r"^(Error|Warning): Race reported between (\w+) access at (.+?)$")
_HAZARD = re.compile(r"^(ERROR|WARN)\S*: Potential (\w+) hazard detected at (__\w+__ \S+) .*$")
_SYNC = re.compile(r"^(Barrier error detected.*|.*[Ss]ynchronization error.*|Invalid arguments.*)$")
_IGNORED = re.compile(r"^(COMPUTE-SANITIZER|.*SUMMARY:.*|Program hit .*|Target application returned .*|"
                      r"Error: process didn't terminate successfully.*|Saved host backtrace.*)$")
_AT_OFFSET = re.compile(r"^(?:at )?(?P<fn>.+?)\+0x[0-9a-fA-F]+(?: in (?P<loc>.+))?$")
_AT_PC = re.compile(r"^(?:at )?0x[0-9a-fA-F]+ in (?P<rest>.+)$")
_ADDRESS = re.compile(r"(?:Address|Access to|Access at|access to|access at) (0x[0-9a-fA-F]+)")
_NEAREST = re.compile(r"is (?:(?:[\d,]+) bytes (?:before|after)|inside) the nearest allocation at "
                      r"(0x[0-9a-fA-F]+) of size ([\d,]+) bytes")
_ERRORS = re.compile(r"ERROR SUMMARY: ([\d,]+) errors?")
_HAZARDS = re.compile(r"RACECHECK SUMMARY: .*\(([\d,]+) errors?, ([\d,]+) warnings?\)")
_RACE_PARTNER = re.compile(r"^and (\w+) access at (.+?)(?: \[([\d,]+) hazards?\])?$")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _function_at(text: str) -> str | None:
    """The device function of a report's 'at ...' text: 'kernel(args)+0x70 in f.cu:12' or '0x70 in f.cu:12:kernel'."""
    m = _AT_PC.match(text)
    if m:
        rest = m.group("rest")
        located = re.match(r"^.*?:\d+:(.+)$", rest)   # file:line:function
        return (located.group(1) if located else rest).strip()
    m = _AT_OFFSET.match(text)
    return m.group("fn").strip() if m else None


def short_kernel_name(name: str) -> str:
    """A device function's name without return type, template and parameter lists: what a person recognises."""
    text = re.sub(r"^void ", "", name.strip())
    for opening, closing in (("<", ">"), ("(", ")")):
        out, depth = [], 0
        for ch in text:
            if ch == opening:
                depth += 1
            elif ch == closing and depth:
                depth -= 1
            elif not depth:
                out.append(ch)
        text = "".join(out)
    return text.strip() or name


def _blocks(text: str) -> list[list[str]]:
    """The report's lines grouped: a header line (no indent after the '=====' prefix) and its detail lines."""
    blocks: list[list[str]] = []
    for raw in text.splitlines():
        m = _PREFIX.match(raw.rstrip())
        if not m:
            continue   # the application's own output, when it shares the stream
        body = m.group(2)
        if not body.strip():
            continue
        if body[0].isspace() and blocks:
            blocks[-1].append(body.strip())
        else:
            blocks.append([body.strip()])
    return blocks


@dataclass
class Report:
    """A parsed sanitizer log: the findings, the error count of its summary, the API errors it saw."""

    findings: list[Finding] = field(default_factory=list)
    errors: int | None = None      # the summary's count (errors, hazards of error severity); None: no summary
    api_errors: int = 0            # "Program hit ... on CUDA API call" reports
    unrecognized: list[str] = field(default_factory=list)   # header lines that are none of the known kinds


def parse_report(text: str, tool: str) -> Report:
    """The findings of one compute-sanitizer log (its --log-file, or output prefixed with '=========')."""
    report = Report()
    for block in _blocks(text):
        header, details = block[0], block[1:]
        summary = _ERRORS.search(header)
        if summary:
            report.errors = (report.errors or 0) + _int(summary.group(1))
            continue
        hazards = _HAZARDS.search(header)
        if hazards:
            report.errors = (report.errors or 0) + _int(hazards.group(1))
            continue
        if header.startswith("Program hit "):
            report.api_errors += 1
            continue
        if _IGNORED.match(header):
            continue
        finding = _finding(tool, header, details)
        if finding is None:
            report.unrecognized.append(header)
        else:
            report.findings.append(finding)
    return report


def _finding(tool: str, header: str, details: list[str]) -> Finding | None:
    race = _RACE.match(header)
    if race:
        severity, first, at = race.groups()
        kind = f"Race reported between {first} access"
        for line in details:
            partner = _RACE_PARTNER.match(line)
            if partner:
                kind += f" and {partner.group(1)} access"
                if partner.group(3):
                    kind += f" [{partner.group(3)} hazards]"
                break
        return Finding(tool, kind, _function_at(at), fatal=severity == "Error")
    hazard = _HAZARD.match(header)
    if hazard:
        severity, what, where = hazard.groups()
        kernel = next((_function_at(re.sub(r"^\w+ Thread \([^)]*\) ", "", d)) for d in details
                       if " Thread (" in d), None)
        return Finding(tool, f"Potential {what} hazard at {where}", kernel, fatal=severity == "ERROR")
    if not (_MEMORY_ERROR.match(header) or _UNINITIALIZED.match(header) or _SYNC.match(header)):
        return None
    kernel = address = nearest = None
    out_of_bounds = False
    for line in [header] + details:
        out_of_bounds |= "out of bounds" in line
        if kernel is None and line.startswith("at "):
            kernel = _function_at(line)
        if address is None:
            m = _ADDRESS.search(line)
            if m:
                address = int(m.group(1), 16)
        m = _NEAREST.search(line)
        if m:
            nearest = (int(m.group(1), 16), _int(m.group(2)))
    kind = re.sub(r" at (host access to )?0x[0-9a-fA-F]+.*$", "", header)
    return Finding(tool, kind, kernel, address, nearest=nearest, out_of_bounds=out_of_bounds or nearest is not None)


def locate(address: int, ranges: dict[str, list[int]], nearest: tuple[int, int] | None = None,
           out_of_bounds: bool = True) -> str | None:
    """An address in words relative to the operand it hit or lies next to, from the worker's {name: [start, size]}.

    Inside an operand: 'byte 12 of b'. An access outside every allocation (`out_of_bounds`): relative to the
    allocation the sanitizer named nearest ('65536 bytes past the end of b', or 'of an allocation of N bytes
    that is no operand'), else to the nearest operand within PADDING_BYTES. None when nothing fits (an
    uninitialized read of a workspace, say)."""
    for name, (start, size) in ranges.items():
        if start <= address < start + size:
            return f"byte {address - start} of {name}"
    if not out_of_bounds:
        return None
    candidates = ranges.items()
    if nearest is not None:
        base, size = nearest
        # The operand the sanitizer's allocation is (or holds, or lies in).
        owned = [(n, r) for n, r in ranges.items() if r[0] <= base < r[0] + r[1] or base <= r[0] < base + size]
        if owned:
            candidates = owned
        else:
            return f"{_relative(address, base, size)} an allocation of {size} bytes that is no operand"
    best = None
    for name, (start, size) in candidates:
        gap = address - (start + size) if address >= start + size else start - address
        if best is None or gap < best[0]:
            best = (gap, name, start, size)
    if best is None or (nearest is None and best[0] > PADDING_BYTES):
        return None
    _, name, start, size = best
    return f"{_relative(address, start, size)} {name}"


def _relative(address: int, start: int, size: int) -> str:
    if address >= start + size:
        return f"{address - (start + size)} bytes past the end of"
    if address < start:
        return f"{start - address} bytes before the start of"
    return f"byte {address - start} of"


# ---------------------------------------------------------------------------------------------------------
# one sanitized pass (the parent's side)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class PassResult:
    """What one tool's pass over one case found."""

    tool: str
    findings: list[Finding]
    log: str
    seconds: float
    errors: int | None = None        # the sanitizer's own count
    exit_code: int | None = None
    error: str | None = None         # why the pass itself did not complete (no finding explains it)
    call_seconds: float | None = None   # the kernel's call under the sanitizer, compilation included

    @property
    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.fatal]

    def to_dict(self) -> dict:
        return {"tool": self.tool, "errors": self.errors, "findings": [f.to_dict() for f in
                                                                     self.findings[:KEPT_FINDINGS]],
                "log": self.log, "seconds": round(self.seconds, 3), "call_seconds": self.call_seconds,
                "exit_code": self.exit_code, "error": self.error}


def _package_parent() -> str:
    return str(Path(__file__).resolve().parent.parent)


def sanitizer_command(sanitizer: str, tool: str, log: Path, job: Path, out: Path) -> list[str]:
    """The command line of one pass: the sanitizer, its options, and this module's worker entry point."""
    # application-only: the worker is the program to check; what it starts (ptxas for Triton, nvcc for a
    # CUTLASS build) runs no kernels.
    # --log-file expands %p, %q{VAR} and %%: a literal % of the path is written as %%.
    options = ["--tool", tool, "--print-limit", str(PRINT_LIMIT), "--error-exitcode", str(FOUND_EXIT),
               "--target-processes", "application-only", "--log-file", str(log).replace("%", "%%")]
    if tool == "memcheck":
        options += ["--padding", str(PADDING_BYTES)]
    return [sanitizer, *options, sys.executable, "-m", "fp4bench.sanitize", str(job), str(out)]


# Sanitized processes still running (passes of one case run in parallel threads): a run that ends, by
# Ctrl-C or otherwise, ends them too; they are in sessions of their own, out of reach of the terminal's signal.
_live: set = set()


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):   # already gone
        pass


def _kill_live() -> None:
    for proc in list(_live):
        _kill_group(proc)


atexit.register(_kill_live)


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else ""


def run_pass(spec, tool: str, sanitizer: str, log: Path, env: dict[str, str], timeout_s: float) -> PassResult:
    """Run one case under one tool in a fresh process; parse its log. Never raises for what the kernel does."""
    from .isolation import describe_exit

    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fp4bench-sanitize-") as tmp:
        job, out = Path(tmp) / "job.pickle", Path(tmp) / "worker.json"
        job.write_bytes(pickle.dumps({"sys_path": list(sys.path), "spec": spec}))
        python_path = os.pathsep.join(filter(None, [_package_parent(), os.environ.get("PYTHONPATH")]))
        child_env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_CONFIG_VARS}
        child_env.update(env, **NO_CACHING, PYTHONPATH=python_path)
        if log.exists():
            log.unlink()
        # A session of its own: on a timeout the sanitizer and the worker under it are killed together.
        proc = subprocess.Popen(sanitizer_command(sanitizer, tool, log, job, out), env=child_env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        _live.add(proc)
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            output, _ = proc.communicate()
        finally:
            _live.discard(proc)
        worker = json.loads(out.read_text()) if out.exists() else None
    seconds = time.perf_counter() - started
    if output.strip():
        # The worker's own output (Triton warnings, a traceback) beside the report.
        log.with_suffix(".out").write_text(output)
    text = log.read_text(errors="replace") if log.exists() else ""
    report = parse_report(text, tool)
    ranges = (worker or {}).get("ranges") or {}
    findings = [replace(f, where=locate(f.address, ranges, f.nearest, f.out_of_bounds))
                if f.address is not None else f for f in report.findings]
    fatal = [f for f in findings if f.fatal]
    error = None
    if timed_out:
        error = f"no result after {timeout_s:g} s under {tool} (killed; --case-timeout)"
    elif not fatal:
        if worker is None:
            why = _last_line(output) or _last_line(text) or f"exit code {proc.returncode}"
            error = f"the sanitized worker did not run: {why}"
        elif worker.get("skipped"):
            error = f"skipped in the sanitized worker: {worker['skipped']}"
        elif worker.get("error"):
            error = f"under {tool} the kernel raised {worker['error']}"
        elif not worker.get("called"):
            why = _last_line(output) or describe_exit(proc.returncode)
            error = f"the sanitized worker died while the kernel ran: {why}"
        elif not findings and ((report.errors or 0) > report.api_errors
                               or (report.errors is None and proc.returncode == FOUND_EXIT)):
            # Errors counted but none of a kind this parser knows: fail with what the log says, never pass.
            counted = f"{report.errors} error(s)" if report.errors is not None else "errors"
            kind = report.unrecognized[0] if report.unrecognized else f"{counted} reported (see the log)"
            findings.insert(0, Finding(tool, kind))
    return PassResult(tool, findings, str(log), seconds, report.errors, proc.returncode, error,
                      (worker or {}).get("call_s"))


def apply_passes(record, passes: list[PassResult]):
    """The case record with the passes' findings: a passed case with a finding fails (its first finding is the
    reason), one whose pass could not complete is an error; a case that already failed keeps its reason."""
    from .case import CaseStatus

    lines = []
    for p in passes:
        fatal = p.fatal
        for f in fatal[:5]:
            lines.append(f.summary())
        if len(fatal) > 5:
            lines.append(f"{p.tool}: {len(fatal) - 5} more finding(s) in {p.log}")
        if p.error:
            lines.append(f"{p.tool}: {p.error}")
        warnings = [f for f in p.findings if not f.fatal]
        if warnings:
            lines.append(f"{p.tool}: {len(warnings)} warning(s), not failing: {warnings[0].summary()}")
    status, reason = record.status, record.reason
    first_fatal = next((f for p in passes for f in p.fatal), None)
    first_error = next((p for p in passes if p.error and not p.fatal), None)
    if status == CaseStatus.PASS and first_fatal is not None:
        status, reason = CaseStatus.FAIL, first_fatal.summary()
    elif status == CaseStatus.PASS and first_error is not None:
        status, reason = CaseStatus.ERROR, f"{first_error.tool}: {first_error.error}"
    return record.but(status=status, reason=reason, findings=tuple(record.findings) + tuple(lines),
                      sanitizer=tuple(p.to_dict() for p in passes))


def log_name(spec, tool: str) -> str:
    """A pass's log file name: kernel, format, shape and seed, and the tool."""
    from .case import kernel_label

    s = spec.shape
    stem = f"{kernel_label(spec.kernel)}-{spec.format}-{s.m}x{s.n}x{s.k}x{s.l}-seed{s.seed}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) + f".{tool}.log"


def log_dir_for(json_path: str | None) -> Path:
    """Where the logs go: beside the results file (RESULTS-sanitizer/), else ./fp4bench-sanitizer/."""
    if json_path:
        p = Path(json_path)
        return p.with_name(f"{p.stem}-sanitizer")
    return Path("fp4bench-sanitizer")


# Cases worth a sanitized pass: those that were checked, and those whose worker died (memcheck says where);
# not skipped ones, nor those that timed out or failed before running (they would again).
def _worth_sanitizing(record) -> bool:
    from .case import CaseStatus

    if record.status in (CaseStatus.PASS, CaseStatus.FAIL):
        return True
    return record.status == CaseStatus.ERROR and (record.reason or "").startswith("crashed:")


@dataclass
class Sanitizer:
    """The passes of a verify run: after each case's plain check, one sanitized pass per tool (`finish`)."""

    tools: tuple[str, ...]
    executable: str
    log_dir: Path
    timeout_s: float
    seconds: dict = field(default_factory=dict)     # tool -> total wall seconds of its passes
    cases: int = 0
    plain_seconds: float = 0.0                       # the plain checks of the same cases
    flagged: int = 0

    def finish(self, lane, spec, record):
        """The per-case hook of fp4bench.runner.execute: the plain record with this case's passes applied."""
        from .runner import pin_env

        if not _worth_sanitizing(record):
            return record
        # A pinned lane's worker sees one GPU, index 0; an unpinned one keeps the index it was given.
        sanitized_spec = replace(spec, gpu=0) if lane is not None else spec

        def one(tool: str) -> PassResult:
            log = self.log_dir / log_name(spec, tool)
            try:
                return run_pass(sanitized_spec, tool, self.executable, log, pin_env(lane), self.timeout_s)
            except OSError as e:   # the log folder cannot be written, the sanitizer cannot be started
                return PassResult(tool, [], str(log), 0.0, error=f"could not run: {e}")

        # The tools' passes are independent processes: they run side by side on the case's GPU.
        pool = ThreadPoolExecutor(max_workers=len(self.tools), thread_name_prefix="sanitize")
        try:
            passes = list(pool.map(one, self.tools))
        except BaseException:   # Ctrl-C: end the passes still running instead of waiting for them
            _kill_live()
            raise
        finally:
            pool.shutdown(wait=True)
        self.cases += 1
        self.plain_seconds += record.seconds or 0.0
        for p in passes:
            self.seconds[p.tool] = self.seconds.get(p.tool, 0.0) + p.seconds
        out = apply_passes(record, passes)
        if any(p.fatal for p in passes):
            self.flagged += 1
        return out

    def summary(self) -> str:
        """One line per run: what ran, how long against the plain checks of the same cases, where the logs are."""
        if not self.cases:
            return "sanitizer: no case was checked, so none was sanitized"
        parts = []
        for tool in self.tools:
            s = self.seconds.get(tool, 0.0)
            ratio = f", {s / self.plain_seconds:.1f}x the plain checks" if self.plain_seconds > 0 else ""
            parts.append(f"{tool} {s:.1f} s{ratio}")
        return (f"sanitizer: {self.cases} case(s), {self.flagged} with findings; {'; '.join(parts)} "
                f"(plain checks {self.plain_seconds:.1f} s); logs in {self.log_dir}")


# ---------------------------------------------------------------------------------------------------------
# the sanitized worker (the child's side)
# ---------------------------------------------------------------------------------------------------------
def exact_copy(t, device):
    """`t` on `device` in an allocation of its own holding exactly its extent (same sizes and strides)."""
    import torch

    from .integrity import INT_VIEW

    bits = INT_VIEW[t.element_size()]
    staged = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype)
    staged.view(bits).copy_(t.view(bits))        # any layout, on the CPU
    out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=device)
    out.untyped_storage().copy_(staged.untyped_storage())   # one host-to-device memcpy, no kernel
    return out


def _placed(x, device):
    """Every tensor of a (nested) input structure in an exact allocation of its own on `device`."""
    import torch

    if isinstance(x, torch.Tensor):
        return exact_copy(x, device)
    if isinstance(x, (list, tuple)):
        return type(x)(_placed(v, device) for v in x)
    return x


def placed_problem(shape, fmt, device, kind: str = "gemm"):
    """The case's first input, drawn on the CPU, every operand and the NaN-poisoned output in an exact
    allocation of its own on `device` (of any problem kind; the grouped problem's row-major scales stay on the
    CPU, where the competition hands them over)."""
    from .problem import GROUP_GEMM, Problem, generate, poison_output

    host = poison_output(generate(shape, fmt, "cpu", kind))
    if kind == GROUP_GEMM:
        abc, scales, permuted, sizes = host.data
        data = (_placed(abc, device), scales, _placed(permuted, device), sizes)
    else:
        data = _placed(host.data, device)
    return Problem(shape, fmt, data, device, kind)


def operand_ranges(problem) -> dict[str, list[int]]:
    """The storage range of every input and output tensor of a problem, by name (a group's with its index)."""
    spec = problem.spec
    outputs = spec.outputs(problem.data)
    named = spec.inputs(problem.data) + [("c" if len(outputs) == 1 and spec.output_slot is not None
                                          else f"c[{g}]", c) for g, c in enumerate(outputs)]
    return {name: storage_range(t) for name, t in named if t.device.type != "cpu" or problem.device.type == "cpu"}


def storage_range(t) -> list[int]:
    storage = t.untyped_storage()
    return [storage.data_ptr(), storage.nbytes()]


def sanitized_call(spec, report: dict, save) -> None:
    """Prepare the kernel on the placed input and call it once; fill `report` (ranges first, saved at once).

    Runs on the spec's device: the GPU under the sanitizer; the CPU only in tests of this worker itself."""
    import torch

    from .arch import current_target
    from .formats import gemm_format
    from .kernels import get_kernel
    from .pipeline import synchronize

    kernel = get_kernel(spec.kernel, spec.problem)
    target = current_target(spec.device, spec.gpu)
    if target.device == "cuda":
        torch.cuda.set_device(target.torch_device)
    problem = placed_problem(spec.shape, gemm_format(spec.format), target.torch_device, spec.problem)
    skip = kernel.reason_to_skip(problem, target)
    if skip:
        report["skipped"] = skip
        return
    report["ranges"] = operand_ranges(problem)
    save()   # before anything of the kernel runs: a report must be placeable even if the process dies
    fn = kernel.prepared(problem)   # its per-input-set preparation runs under the sanitizer too
    synchronize(target)
    started = time.perf_counter()
    out = fn(problem.data)
    synchronize(target)
    report["call_s"] = round(time.perf_counter() - started, 4)
    report["called"] = True
    returned = [t for t in (out if isinstance(out, (list, tuple)) else [out])
                if isinstance(t, torch.Tensor) and t.numel()]
    for i, t in enumerate(returned):
        rng = storage_range(t)
        if rng[0] not in {r[0] for r in report["ranges"].values()}:
            report["ranges"][RETURNED if len(returned) == 1 else f"{RETURNED} [{i}]"] = rng
    if returned:
        save()
        # The result read once, as a caller would: initcheck reports the elements of a fresh (torch.empty)
        # output the kernel left unwritten. c itself was poisoned, so reading it is always clean.
        for t in returned:
            t.cpu()
        synchronize(target)


def worker_main(job_path: str, out_path: str) -> int:
    """The sanitized process: run the pickled job's case (`sanitized_call`), its report as JSON in `out_path`."""
    from .case import one_line
    from .isolation import _die_with_parent
    from .results import atomic_write_text

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    # The parent's import path (submission files import their siblings; tests' modules unpickle).
    sys.path[:] = job["sys_path"]
    report = {"ranges": {}, "called": False, "error": None, "call_s": None, "skipped": None}
    try:
        sanitized_call(job["spec"], report, lambda: atomic_write_text(out_path, json.dumps(report)))
    except Exception as e:   # whatever the kernel raises is the pass's result, not a crash of the worker
        report["error"] = one_line(e)
    atomic_write_text(out_path, json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
