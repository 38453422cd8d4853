"""Timed calls that are checked: a kernel must be right on the calls that are timed, not only on the checks.

`TimedAudit` is the `timing.Rotation` of the case pipeline's time stage. Everything it does runs outside the
timed region (before a batch, between a call's end event and the next call's start event, after the batch's
device-wide synchronisation), so an honest kernel's samples are what they were.

Input sets. Every timed call of a batch takes its own input set ("slot"). Before every batch each slot is
refilled in place (the same buffers, other contents), and one slot gets fresh buffers. The contents are
variants of one base input: the rows of some operands negated, chosen at random per slot and batch (a
sign-bit XOR: exact, and the expected output is the base reference with the same rows or columns negated;
`FLIPS`), so no two timed calls see the same bytes and no reference beyond the base one is computed. The
pre-filled c is negated with them, so an output left unwritten is told from a stale one. A kernel's
per-input-set preparation (`Kernel.prepare_inputs`) runs after every refill. The fresh buffers get one
untimed call first, checked (`probe`): it tells a kernel that is wrong on every call from one that is wrong
only on buffers it has seen, and keeps a pointer-keyed argument cache's miss out of the samples.

Checked timed calls: the last call of every batch and one other at random. The output is copied on the
caller's stream the moment the call returns and compared, after the batch's device-wide synchronisation,
with what it holds then, and the copy is checked against the reference of the contents it was called on.
A wrong output is named by what it matches:
  cached-by-address   the result of what the same buffers held before (a cache keyed by data_ptr)
  cached-by-shape     the result of another input set's contents (a cache keyed by shape)
  copied-reference    the harness's base reference itself (found in memory and copied)
  call-count-switch   none of these, and the untimed call on never-seen buffers was wrong too: the kernel
                      is right on its first calls (the checks) and wrong after some count
  warm-up-detection   none of these, and the call on never-seen buffers was right: the kernel tells timed
                      calls from checks by buffers it has seen (a constant input pointer)
  output-in-flight    the output changed after the call returned: work on a stream the caller never waited
                      for, or deferred to a later call (integrity.OUTPUT_IN_FLIGHT)
  tampered-reference  the base reference was written into while the kernel ran (integrity.Seal)
After sampling (`finish`), on a GPU:
  work-outside-events N calls back to back, then a device-wide synchronize: the GPU stayed busy after the
                      host enqueued the last call for longer than the calls' events account for, so work
                      escaped the events (a private stream the caller's stream never waits for).
  l2-persisting       the device's persisting-L2 limit or the caller stream's access-policy window was set
                      (read and reset before every timed sample, `L2Policy`; persisting lines are reset to
                      normal before every batch).
Graph mode replays fixed addresses: its slots are refilled in place before every batch of replays (no fresh
buffers), and the last captured call and one other whose output no later call overwrites are checked; a
wrong one that matches no contents is `wrong-when-timed` (no fresh-buffer call tells the last two apart).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from types import MappingProxyType

import torch

from .checking import CheckResult, check_output
from .integrity import ALIGN_BYTES, INT_VIEW, Finding, Seal, copy_of, in_flight_finding
from .problem import DUAL_GEMM, GEMM, GEMV, GROUP_GEMM, Problem
from .reference import Expected
from .timing import SAMPLES_PER_BATCH, Measurement, Rotation

CACHED_BY_ADDRESS = "cached-by-address"
CACHED_BY_SHAPE = "cached-by-shape"
COPIED_REFERENCE = "copied-reference"
CALL_COUNT_SWITCH = "call-count-switch"
WARM_UP_DETECTION = "warm-up-detection"
WRONG_WHEN_TIMED = "wrong-when-timed"
WORK_OUTSIDE_EVENTS = "work-outside-events"
L2_PERSISTING = "l2-persisting"

# Contents remembered for naming a stale output: the slots' first ones and this many of the latest.
ARCHIVE = 32
# The event-versus-wall cross-check: about this much GPU time of back-to-back calls, at least / at most this
# many calls; work escaped the events when the GPU stays busy after the last enqueue for longer than
# ESCAPE_FACTOR x the calls' event times plus ESCAPE_SLACK_S (a synchronize's own latency).
CROSS_CHECK_S = 10e-3
CROSS_CHECK_CALLS = (4, 200)
ESCAPE_FACTOR = 2.0
ESCAPE_SLACK_S = 1e-3
# At most this share of the free GPU memory goes to the slots (each an input set and its prepared product).
SLOT_MEMORY_SHARE = 0.5
# A slot's tensor starts at one of this many 256-byte offsets of its allocation, at random.
PLACEMENTS = 64


class AuditFailure(Exception):
    """A timed call failed a check: the finding names the class."""

    def __init__(self, finding: Finding):
        super().__init__(str(finding))
        self.finding = finding


# ---------------------------------------------------------------------------------------------------------
# contents: sign variants of the base input
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flip:
    """An operand whose rows may be negated, and the output axis its row signs land on (0 rows, 1 columns)."""

    operand: str   # its name in KindSpec.inputs, the group index left off
    axis: int


# GEMV's b is padded to 128 rows: row 0's sign lands on the one column. The dual GEMM's output
# silu(A·B1ᵀ)·(A·B2ᵀ) is odd in B2 alone.
FLIPS = MappingProxyType({
    GEMM: (Flip("a", 0), Flip("b", 1)),
    GEMV: (Flip("a", 0), Flip("b", 1)),
    DUAL_GEMM: (Flip("b2", 1),),
    GROUP_GEMM: (Flip("a", 0), Flip("b", 1)),
})


@dataclass
class Variant:
    """One content: which rows of each flipped operand are negated, and so which outputs are."""

    ident: int
    rows: dict[str, torch.Tensor]          # input name -> bool [rows, L] (True: negated), on the CPU
    negated: list[torch.Tensor]            # per output: bool [M, N, L], on the output's device


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(INT_VIEW[t.element_size()])


def _as_int(pattern: int, dtype: torch.dtype) -> torch.Tensor:
    """A 0-d tensor of the integer dtype with these bits (torch's int16/32/64 are signed, uint8 is not)."""
    bits = 8 * torch.empty((), dtype=dtype).element_size()
    signed = dtype != torch.uint8
    return torch.tensor(pattern - (1 << bits) if signed and pattern >= 1 << (bits - 1) else pattern, dtype=dtype)


def _top_bit(t: torch.Tensor) -> torch.Tensor:
    """The top bit of t's element (the sign of every IEEE-style float) as a 0-d tensor of its integer view."""
    size = t.element_size()
    return _as_int(1 << (8 * size - 1), INT_VIEW[size])


def copy_bits(dst: torch.Tensor, src: torch.Tensor) -> None:
    _bits(dst).copy_(_bits(src))


def _placed_like(x: torch.Tensor, chooser: random.Random) -> torch.Tensor:
    """An uninitialised tensor of x's sizes, strides, dtype and device that starts at a random 256-byte offset
    of its own allocation: its address is almost surely one no earlier tensor had, even where the allocator
    hands back a block it just freed (the pointer-keyed checks rely on fresh buffers being new)."""
    size = x.element_size()
    span = size * (1 + sum((n - 1) * st for n, st in zip(x.shape, x.stride()))) if x.numel() else size
    raw = torch.empty(span + ALIGN_BYTES * PLACEMENTS, dtype=torch.uint8, device=x.device)
    start = (-raw.data_ptr()) % ALIGN_BYTES + ALIGN_BYTES * chooser.randrange(PLACEMENTS)
    return raw[start:start + span].view(x.dtype).as_strided(x.shape, x.stride())


def clone_tree(x, chooser: random.Random | None = None):
    """A deep copy of an input structure: every tensor in new memory with the same sizes, strides and device
    (with `chooser`, at a random aligned offset: `_placed_like`)."""
    if isinstance(x, torch.Tensor):
        if chooser is None:
            t = torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device=x.device)
        else:
            t = _placed_like(x, chooser)
        copy_bits(t, x)
        return t
    if isinstance(x, tuple):
        return tuple(clone_tree(v, chooser) for v in x)
    if isinstance(x, list):
        return [clone_tree(v, chooser) for v in x]
    return x


def copy_tree_into(dst, src) -> None:
    """Write the tensors of `src` into those of `dst` (the same structure), in place: a captured graph keeps
    reading the same addresses."""
    if dst is src:
        return
    if isinstance(dst, torch.Tensor):
        copy_bits(dst, src)
    elif isinstance(dst, (tuple, list)):
        for d, s in zip(dst, src):
            copy_tree_into(d, s)


def _group_of(name: str) -> tuple[str, int]:
    """'a[3]' -> ('a', 3); 'b2' -> ('b2', 0)."""
    if name.endswith("]"):
        operand, index = name[:-1].split("[")
        return operand, int(index)
    return name, 0


class Contents:
    """The base input of a case and its sign variants, written into input sets of the same structure."""

    def __init__(self, base: Problem, seed: int):
        self.base = base
        self.spec = base.spec
        self.generator = torch.Generator().manual_seed(seed)
        self._count = 0
        flips = {f.operand: f for f in FLIPS[base.kind]}
        self.flips = []   # (input index, name, group, axis, sign mask)
        for index, (name, t) in enumerate(self.spec.inputs(base.data)):
            operand, group = _group_of(name)
            if operand in flips:
                element = (base.fmt.a if operand == "a" else base.fmt.b).element
                mask = _as_int(element.sign_mask, INT_VIEW[t.element_size()])
                self.flips.append((index, name, group, flips[operand].axis, mask))
        self.base_outputs = self.spec.outputs(base.data)

    def draw(self, plain: bool = False) -> Variant:
        """A new variant (`plain`: none negated, the base itself)."""
        inputs = self.spec.inputs(self.base.data)
        rows = {}
        for index, name, _, _, _ in self.flips:
            t = inputs[index][1]
            shape = (t.shape[0], t.shape[2])
            rows[name] = (torch.zeros(shape, dtype=torch.bool) if plain
                          else torch.randint(0, 2, shape, generator=self.generator, dtype=torch.bool))
        negated = []
        for g, c in enumerate(self.base_outputs):
            m, n, l = c.shape
            out = torch.zeros((m, n, l), dtype=torch.bool)
            for _, name, group, axis, _ in self.flips:
                if group == g:
                    s = rows[name]
                    out ^= s[:m, None, :] if axis == 0 else s[None, :n, :]
            negated.append(out.to(c.device))
        self._count += 1
        return Variant(self._count, rows, negated)

    def write(self, variant: Variant, data) -> None:
        """The variant's contents into `data` (the base's structure): flipped operands and the pre-filled c
        from the base with the sign bits XORed; every other tensor keeps what it holds (the base's)."""
        base_inputs, inputs = self.spec.inputs(self.base.data), self.spec.inputs(data)
        for index, name, _, _, mask in self.flips:
            src, dst = base_inputs[index][1], inputs[index][1]
            bits = variant.rows[name].to(device=dst.device)[:, None, :].to(mask.dtype) * mask.to(dst.device)
            torch.bitwise_xor(_bits(src), bits, out=_bits(dst))
        for negated, src, dst in zip(variant.negated, self.base_outputs, self.spec.outputs(data)):
            top = _top_bit(dst).to(dst.device)
            torch.bitwise_xor(_bits(src), negated.to(top.dtype) * top, out=_bits(dst))

    def expected(self, variant: Variant, base: Expected) -> Expected:
        def signed(values, negated):
            return torch.where(negated, -values, values)

        if isinstance(base.values, list):
            return Expected([signed(v, n) for v, n in zip(base.values, variant.negated)], base.allowance)
        return Expected(signed(base.values, variant.negated[0]), base.allowance)

    def prefill(self, variant: Variant) -> list[torch.Tensor]:
        """What the variant's c held before a call (one tensor per output)."""
        out = []
        for negated, src in zip(variant.negated, self.base_outputs):
            top = _top_bit(src).to(src.device)
            out.append(torch.bitwise_xor(_bits(src), negated.to(top.dtype) * top).view(src.dtype))
        return out


# ---------------------------------------------------------------------------------------------------------
# the persisting-L2 state (GPU)
# ---------------------------------------------------------------------------------------------------------
class L2Policy:
    """The device's persisting-L2 limit and the access-policy window of the caller's stream.

    `reset()` reads both (host calls through cuda.bindings.runtime that do not wait for the GPU), puts back the
    defaults where a kernel changed them and records what it found; `reset_lines()` turns persisting L2 lines
    back to normal (once per batch). A kernel that set a window on a private stream needs the limit too, and
    the limit is device-wide."""

    def __init__(self, device: torch.device):
        from cuda.bindings import runtime

        self.rt = runtime
        self.device = device
        self.found: list[str] = []
        index = device.index if device.index is not None else torch.cuda.current_device()
        self._check(runtime.cudaSetDevice(index), "cudaSetDevice")
        self._window_attr = runtime.cudaStreamAttrID.cudaStreamAttributeAccessPolicyWindow

    def _check(self, result, what: str):
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return values[0] if values else None

    def reset(self) -> None:
        rt = self.rt
        limit_id = rt.cudaLimit.cudaLimitPersistingL2CacheSize
        limit = self._check(rt.cudaDeviceGetLimit(limit_id), "cudaDeviceGetLimit")
        if limit:
            self.found.append(f"set the persisting-L2 limit to {limit} bytes")
            self._check(rt.cudaDeviceSetLimit(limit_id, 0), "cudaDeviceSetLimit")
            self.reset_lines()
        stream = torch.cuda.current_stream(self.device).cuda_stream
        value = self._check(rt.cudaStreamGetAttribute(stream, self._window_attr), "cudaStreamGetAttribute")
        window = value.accessPolicyWindow
        if window.num_bytes:
            self.found.append(f"set an access-policy window of {window.num_bytes} bytes (hit ratio "
                              f"{window.hitRatio:g}) on the caller's stream")
            # A zeroed value is the default: no window, normal hits and misses.
            self._check(rt.cudaStreamSetAttribute(stream, self._window_attr, rt.cudaStreamAttrValue()),
                        "cudaStreamSetAttribute")

    def reset_lines(self) -> None:
        self._check(self.rt.cudaCtxResetPersistingL2Cache(), "cudaCtxResetPersistingL2Cache")

    def finding(self) -> Finding | None:
        if not self.found:
            return None
        return Finding(L2_PERSISTING, f"the kernel {self.found[0]} (the harness resets it before every timed "
                                      f"sample)")


# ---------------------------------------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    uid: int
    data: object
    variant: Variant
    product: object = None


@dataclass
class _Check:
    label: str
    slot: _Slot
    variant: Variant
    out: object
    copy: object
    in_flight: Finding | None = None
    result: CheckResult | None = None

    @property
    def failed(self) -> bool:
        return self.in_flight is not None or not self.result.passed


def slots_that_fit(set_bytes: int, device: torch.device, most: int = SAMPLES_PER_BATCH) -> int:
    """How many slots of `set_bytes` (an input set with its prepared product) the timing may hold: `most`,
    fewer on a GPU whose free memory they would crowd (at least 2)."""
    if device.type != "cuda" or set_bytes <= 0:
        return most
    free, _ = torch.cuda.mem_get_info(device)
    return max(2, min(most, int(SLOT_MEMORY_SHARE * free // set_bytes)))


def tree_bytes(x, seen: set | None = None) -> int:
    """Bytes of the distinct storages of the tensors in a structure."""
    seen = set() if seen is None else seen
    if isinstance(x, torch.Tensor):
        storage = x.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(x, (tuple, list)):
        return sum(tree_bytes(v, seen) for v in x)
    return 0


class TimedAudit(Rotation):
    """The timed calls' input sets, refilled and checked (module docstring). `fn` is the timed callable,
    `prepare_inputs(data)` its per-input-set preparation, `expected` the base input's reference."""

    audited = True

    def __init__(self, base: Problem, expected: Expected, fn, prepare_inputs, *, slots: int = SAMPLES_PER_BATCH,
                 graph: bool = False, l2: L2Policy | None = None):
        chooser = random.SystemRandom()   # neither the checked calls nor the contents can be predicted
        self.contents = Contents(base, chooser.getrandbits(63))
        self.base, self.base_expected = base, expected
        self.seal = Seal.of(expected, "the reference of the timed inputs")
        self.fn, self.prepare = fn, prepare_inputs
        self.device = base.device
        self.graph, self.l2 = graph, l2
        self.chooser = chooser
        self._uids = 0
        self.archive: list[tuple[int, Variant]] = []   # (buffers' uid, contents), the slots' first ones kept
        self._pinned: int | None = None
        self.slots = [self._new_slot() for _ in range(max(1, slots))]
        self._pinned = len(self.archive)
        self.inputs = [s.product for s in self.slots]
        self.batch_calls = len(self.slots)
        self.batches = 0
        self.watch: set[int] = set()
        self.checks: list[_Check] = []
        self.captured_outputs: list = []
        self.survivors: list[int] = []

    # -- input sets ------------------------------------------------------------------------------------
    def _remember(self, slot: _Slot) -> None:
        self.archive.append((slot.uid, slot.variant))
        if self._pinned is not None and len(self.archive) > self._pinned + ARCHIVE:
            del self.archive[self._pinned]

    def _new_slot(self) -> _Slot:
        self._uids += 1
        variant = self.contents.draw()
        slot = _Slot(self._uids, clone_tree(self.base.data, self.chooser), variant)
        self.contents.write(variant, slot.data)
        slot.product = self.prepare(slot.data)
        self._remember(slot)
        return slot

    def _refill(self, slot: _Slot, in_place: bool = False) -> None:
        slot.variant = self.contents.draw()
        self.contents.write(slot.variant, slot.data)
        product = self.prepare(slot.data)
        if in_place:
            copy_tree_into(slot.product, product)
        else:
            slot.product = product
        self._remember(slot)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- the Rotation hooks ----------------------------------------------------------------------------
    def begin_batch(self, calls: int) -> list:
        self.checks = [self._probe()]
        for slot in self.slots:
            self._refill(slot)
        self.inputs = [s.product for s in self.slots]
        last = calls - 1
        self.watch = {last, self.chooser.randrange(last)} if last > 0 else {last}
        if self.l2 is not None:
            self.l2.reset_lines()
        return self.inputs[:calls]

    def begin_replays(self) -> None:
        self.checks = []
        for slot in self.slots:
            self._refill(slot, in_place=True)
        if self.l2 is not None:
            self.l2.reset_lines()

    def captured(self, outputs: list) -> None:
        """Graph mode: the captured calls' outputs; those no later call overwrites can be checked."""
        self.captured_outputs = outputs

        def storages(out):
            parts = out if isinstance(out, (list, tuple)) else [out]
            return {t.untyped_storage().data_ptr() for t in parts if isinstance(t, torch.Tensor)}

        seen: set = set()
        self.survivors = []
        for i in reversed(range(len(outputs))):
            mine = storages(outputs[i])
            if mine and not mine & seen:
                self.survivors.append(i)
            seen |= mine

    def before_call(self, j: int) -> None:
        if self.l2 is not None:
            self.l2.reset()

    def after_call(self, j: int, out) -> None:
        if not self.graph:
            if j in self.watch:
                slot = self.slots[j]
                self.checks.append(_Check(f"timed call {j + 1} of {self.batch_calls} in batch {self.batches + 1}",
                                          slot, slot.variant, out, copy_of(out)))
            return
        if j != SAMPLES_PER_BATCH - 1 or not self.survivors:
            return
        last = self.survivors[0]
        others = self.survivors[1:]
        for i in [last] + ([self.chooser.choice(others)] if others else []):
            slot = self.slots[i % len(self.slots)]
            out = self.captured_outputs[i]
            self.checks.append(_Check(f"captured call {i + 1} of replay batch {self.batches + 1}", slot,
                                      slot.variant, out, copy_of(out)))

    def end_batch(self) -> None:
        self._synchronize()
        broken = self.seal.broken()
        if broken is not None:
            raise AuditFailure(broken)
        if self.l2 is not None and self.l2.finding() is not None:
            raise AuditFailure(self.l2.finding())
        for check in self.checks:
            if check.result is None:
                self._judge(check)
        self._diagnose(self.checks)
        self.checks = []
        self.batches += 1

    def finish(self, fn, measurement: Measurement) -> None:
        if self.device.type != "cuda":
            return
        median = measurement.stats.median
        lo, hi = CROSS_CHECK_CALLS
        calls = max(lo, min(hi, math.ceil(CROSS_CHECK_S / max(median, 1e-7))))
        products = [s.product for s in self.slots]
        self._synchronize()
        t0 = time.perf_counter()
        for i in range(calls):
            fn(products[i % len(products)])
        enqueued = time.perf_counter() - t0
        torch.cuda.synchronize(self.device)   # device-wide: every stream's work
        tail = time.perf_counter() - t0 - enqueued
        if self.l2 is not None:
            self.l2.reset()
        if tail > ESCAPE_FACTOR * calls * median + ESCAPE_SLACK_S:
            raise AuditFailure(Finding(WORK_OUTSIDE_EVENTS, f"after {calls} back-to-back calls the GPU stayed busy "
                                                            f"{tail * 1e6:.0f} us past the last one's return; "
                                                            f"their events account for "
                                                            f"{calls * median * 1e6:.0f} us (work on a stream "
                                                            f"the caller's stream never waits for)"))
        if self.l2 is not None and self.l2.finding() is not None:
            raise AuditFailure(self.l2.finding())

    # -- checks ----------------------------------------------------------------------------------------
    def _probe(self) -> _Check:
        """Fresh buffers for one slot (allocated while the old ones are alive: addresses the kernel has not
        seen), one untimed call on them, checked at once (a later timed call reuses the buffers)."""
        index = self.batches % len(self.slots)
        fresh = self._new_slot()
        out = self.fn(fresh.product)
        check = _Check(f"the first call on fresh buffers (batch {self.batches + 1})", fresh, fresh.variant, out,
                       copy_of(out))
        self._synchronize()
        self._judge(check)
        self.slots[index] = fresh
        return check

    def _judge(self, check: _Check) -> None:
        check.in_flight = in_flight_finding(check.copy, check.out, check.label)
        expected = self.contents.expected(check.variant, self.base_expected)
        check.result = self._compare(check.copy, expected)

    def _compare(self, out, expected: Expected) -> CheckResult:
        return check_output(out, expected.values, self.base.fmt.out_dtype, allowance=expected.allowance)

    def _matches(self, check: _Check) -> str | None:
        """What a wrong output is the result of: its own buffers' earlier contents, another input set's, or
        the base reference itself; None if none."""
        own = other = False
        for uid, variant in self.archive:
            if variant is check.variant:
                continue
            if self._compare(check.copy, self.contents.expected(variant, self.base_expected)).passed:
                own |= uid == check.slot.uid
                other |= uid != check.slot.uid
        if other:
            return CACHED_BY_SHAPE
        if own:
            return CACHED_BY_ADDRESS
        if self._compare(check.copy, self.base_expected).passed:
            return COPIED_REFERENCE
        return None

    def _unwritten(self, check: _Check) -> bool:
        """Whether the output is bit for bit the c the call found (nothing written)."""
        parts = check.copy if isinstance(check.copy, list) else [check.copy]
        before = self.contents.prefill(check.variant)
        def same(p, b) -> bool:
            return (isinstance(p, torch.Tensor) and p.shape == b.shape and p.dtype == b.dtype
                    and torch.equal(_bits(p), _bits(b)))

        return len(parts) == len(before) and all(same(p, b) for p, b in zip(parts, before))

    def _diagnose(self, checks: list[_Check]) -> None:
        failed = [c for c in checks if c.failed]
        if not failed:
            return
        flight = next((c for c in failed if c.in_flight is not None), None)
        if flight is not None:
            raise AuditFailure(flight.in_flight)
        probe = next((c for c in checks if c.label.startswith("the first call")), None)
        timed = [c for c in failed if c is not probe]
        named = [(c, self._matches(c)) for c in timed]
        for cls, what in ((CACHED_BY_SHAPE, "the result of another input set (same shape, other buffers)"),
                          (CACHED_BY_ADDRESS, "the result of what its input buffers held before they were "
                                              "refilled"),
                          (COPIED_REFERENCE, "the harness's reference itself, not a result for its inputs")):
            hit = next((c for c, name in named if name == cls), None)
            if hit is not None:
                raise AuditFailure(Finding(cls, f"{hit.label} returned {what}"))
        if probe is not None and probe.failed:
            raise AuditFailure(Finding(CALL_COUNT_SWITCH, f"{probe.label} was wrong ({self._how(probe)}), on "
                                                          f"buffers it had never seen, after right answers on "
                                                          f"its first calls"))
        worst = timed[0]
        if probe is None:   # graph replays: no call on fresh buffers to tell the two apart
            raise AuditFailure(Finding(WRONG_WHEN_TIMED, f"{worst.label} was wrong ({self._how(worst)}) though "
                                                         f"right when captured"))
        raise AuditFailure(Finding(WARM_UP_DETECTION, f"{worst.label} was wrong ({self._how(worst)}) on buffers it "
                                                      f"had seen, while {probe.label} was right"))

    def _how(self, check: _Check) -> str:
        return "left its output unwritten" if self._unwritten(check) else check.result.reason
