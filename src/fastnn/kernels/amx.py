"""bfloat16 and uint8 x int8 matrix products in two kernel families with
one data layout: Intel AMX tiles (Sapphire Rapids and later) and AVX-512
(``vdpbf16ps`` with AVX512-BF16: AMD Zen 4 and later, Intel Cooper Lake;
``vpdpbusd`` with AVX512-VNNI: also Intel Cascade Lake and Ice Lake).

numba cannot express these instructions, so each kernel is written once in
LLVM IR and compiled with llvmlite, the LLVM binding numba itself runs on (no
new dependency). It is called through ctypes, which releases the GIL: one
call per (query block, index tile), several threads at once.

The packed right operand (``pack_b``: pairs of bfloat16 values per column in
groups of 16 columns; ``pack_b_s8``: quads of int8) is what an AMX tile row
holds and also what one 512-bit register holds for 16 columns, so the AVX-512
kernels read the same arrays: a K step broadcasts one pair (quad) of a row of
``A`` to the 16 lanes and multiplies it with 64 bytes of ``B``. Both
families add exact products in float32 (bfloat16) or int32 (int8), so the
error bound below holds for either; they differ only in the order of the
float32 additions, which no answer depends on.

``C[i, j] = sum_t A[i, t] * B[t, j]`` with ``A`` and ``B`` rounded to
bfloat16 by ``to_bf16`` and float32 accumulation. A bfloat16 product is exact
in float32, so the only rounding is the accumulation: for any summation
order ``|C - exact| <= (K + 1) u32 sum_t |A[i, t] B[t, j]|`` (``u32`` =
2**-24), plus 2**-126 per term for the flushing of subnormal values
(``to_bf16`` already flushes its subnormal outputs to zero, so the inputs
the hardware sees are the ones the caller bounds).

Families (``kernel_family()``, chosen once per process from the CPU flags):
``'amx'`` where the CPU reports AMX-BF16, Linux grants the process the tile
data state (``arch_prctl(ARCH_REQ_XCOMP_PERM)``) and a self-test product
equals numpy's; else ``'avx512'`` where it reports AVX512-BF16 (and, for the
int8 product, AVX512-VNNI) and the self-test passes; else none, and callers
use their portable float32 BLAS / numba path. ``FASTNN_AMX=0`` turns AMX
off, ``FASTNN_AVX512=0`` the AVX-512 family; every public function also takes
``family=`` to force one (``ValueError`` where the CPU cannot run it).

The int8 first stage's filtered product (``Int8FilterPlan``) and its dense
product (``gemm_u8s8``) also run on 256-bit registers: ``'avxvnni'`` (the VEX
``vpdpbusd`` of Intel client CPUs without AVX-512) and ``'avx2'`` (any CPU
with AVX2 and FMA: ``vpmaddubsw`` + ``vpmaddwd`` give ``vpdpbusd``'s sums for
uint8 operands up to ``AVX2_A_MAX``, checked); ``FASTNN_AVX2=0`` turns both
off.
"""

import ctypes
import os
import threading

import numpy as np

from . import cpu, ir_cache
from .tile_ir import (KB, _DECLS, _DECLS_AVX2, _DECLS_AVX512, _avx2_int8_ir, _avx512_filter_ir,
                      _avx512_kernel_ir, _filter_kernel_ir, _kernel_ir)

__all__ = ["FAMILIES", "INT8_FILTER_FAMILIES", "kernel_family", "available", "bf16_bits",
           "to_bf16", "from_bf16", "pack_b", "gemm", "gemm_filter", "FilterPlan",
           "Int8FilterPlan", "available_int8", "pack_b_s8", "gemm_u8s8", "KB", "aligned"]

LINE = 64        # cache line: tile rows should start on one
_lock = threading.Lock()
_state = {}      # ("usable", family, op): bool, "tile_state", "engine", "funcs", "ir_compiles"

_P, _I = ctypes.c_void_p, ctypes.c_int64
_PROTO = ctypes.CFUNCTYPE(None, _P, _I, _P, _P, _I, _I, _I)
_PROTO_FILTER = ctypes.CFUNCTYPE(None, _P, _I, _P, _I, _I, _P, _P, _P, _I, _P)
_PROTO_FILTER_U8 = ctypes.CFUNCTYPE(None, _P, _I, _P, _I, _I, _P, _P, _P, _I, _P,
                                    _P, _P, _P, _P, _P)


FAMILIES = ("amx", "avx512")      # in order of preference
# the int8 first stage's filtered product (``Int8FilterPlan``) also runs on
# AVX2 alone (7-bit queries, see ``tile_ir._avx2_int8_ir``); the other uint8
# products need the full 8 bits: AMX or AVX-512 VNNI only
INT8_FILTER_FAMILIES = ("avx512", "avxvnni", "avx2")     # in order of preference
# the largest uint8 value of A the AVX2 int8 product takes (its int16 pair
# sums must not saturate: 2 * 126 * 127 < 2**15)
AVX2_A_MAX = 126
_FEATURES = {"amx": "+amx-tile,+amx-bf16,+amx-int8,+avx512f,+avx512vl,+avx512bw",
             "avx512": "+avx512f,+avx512vl,+avx512bw,+avx512bf16,+avx512vnni",
             # (no AVX-512 at all: on an AVX-512 machine the code is what an
             # AVX2-only CPU runs)
             "avx2": "+avx2,+fma,-avx512f",
             # (the VEX vpdpbusd of Intel client CPUs without AVX-512)
             "avxvnni": "+avx2,+fma,+avxvnni,-avx512f"}


def _round_up(n, multiple):
    """``n`` rounded up to a multiple of ``multiple`` (tile widths)."""
    return -(-n // multiple) * multiple


def _request_tile_state():
    """Ask Linux for the AMX tile data state (XFEATURE_XTILEDATA = 18);
    without it the first tile instruction would kill the process."""
    if "tile_state" not in _state:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # SYS_arch_prctl = 158 on x86-64, ARCH_REQ_XCOMP_PERM = 0x1023
            _state["tile_state"] = libc.syscall(158, 0x1023, 18) == 0
        except (OSError, AttributeError):
            _state["tile_state"] = False
    return _state["tile_state"]


def _supported(fam, op):
    """Whether the CPU, the OS and the ``FASTNN_*`` switches allow ``fam``'s
    ``op`` product (no self-test)."""
    flags = cpu.linux_flags()
    if os.name != "posix":
        return False
    if fam == "amx":
        need = {"amx_tile", "amx_bf16", "avx512f", "avx512vl", "avx512bw"}
        if op == "u8s8":
            need |= {"amx_int8"}
        return cpu.switch_on("FASTNN_AMX") and need <= flags and _request_tile_state()
    if fam == "avx512":
        need = {"avx512f", "avx512vl", "avx512bw",
                "avx512_bf16" if op == "bf16" else "avx512_vnni"}
        return cpu.switch_on("FASTNN_AVX512") and need <= flags
    if fam == "avx2":
        return op == "u8s8" and cpu.switch_on("FASTNN_AVX2") and {"avx2", "fma"} <= flags
    if fam == "avxvnni":
        return (op == "u8s8" and cpu.switch_on("FASTNN_AVX2")
                and {"avx2", "fma", "avx_vnni"} <= flags)
    return False


def _usable(fam, op):
    """``_supported`` and a self-test product equal to numpy's (once per
    process and family)."""
    key = ("usable", fam, op)
    ok = _state.get(key)
    if ok is None:
        ok = _supported(fam, op)
        if ok:
            try:
                ok = _self_test(fam) if op == "bf16" else _self_test_int8(fam)
            except Exception:       # pragma: no cover - any failure: not usable
                ok = False
        _state[key] = ok
    return ok


def kernel_family(op="bf16"):
    """The kernel family this process uses for ``op`` (``'bf16'`` or
    ``'u8s8'``): ``'amx'``, ``'avx512'`` or None (no tile kernels here)."""
    for fam in FAMILIES:
        if _usable(fam, op):
            return fam
    return None


def _resolve(fam, op):
    """``fam`` checked (None: the automatic choice, which must exist)."""
    if fam is None:
        fam = kernel_family(op)
        if fam is None:
            raise RuntimeError(f"no {op} tile kernels on this CPU (see available())")
        return fam
    allowed = FAMILIES + INT8_FILTER_FAMILIES[1:] if op == "u8s8" else FAMILIES
    if fam not in allowed:
        raise ValueError(f"kernel family must be one of {allowed} or None, got {fam!r}")
    if not _usable(fam, op):
        raise ValueError(f"the {fam!r} {op} kernels cannot run here (CPU flags, the OS, or "
                         f"FASTNN_AMX=0 / FASTNN_AVX512=0)")
    return fam


def _compile(fam, op, kb):
    import llvmlite.binding as ll

    eng = _state.get("engine")
    if fam == "amx":
        ir = _DECLS + (_kernel_ir(kb) + _filter_kernel_ir(kb) if op == "bf16"
                       else _kernel_ir(kb, "u8s8"))
    elif fam in ("avx2", "avxvnni"):
        ir = _DECLS_AVX2 + _avx2_int8_ir(kb, vnni=fam == "avxvnni")
    else:
        ir = _DECLS_AVX512 + (_avx512_kernel_ir(kb) + _avx512_filter_ir(kb) if op == "bf16"
                              else _avx512_kernel_ir(kb, "u8s8")
                              + _avx512_filter_ir(kb, op="u8s8"))
    # (each family's functions get their own names: one engine holds both)
    ir = ir.replace(f"@gemm_{op}_{kb}(", f"@{fam}_gemm_{op}_{kb}(").replace(
        f"@filter_{op}_{kb}(", f"@{fam}_filter_{op}_{kb}(")
    if eng is None:
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine(
            cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(),
            opt=3, codemodel="jitdefault")
        eng = ll.create_mcjit_compiler(ll.parse_assembly(""), tm)
        _state["engine"], _state["target_machine"] = eng, tm
    # the machine code comes from the on-disk cache where an earlier process
    # left it (ir_cache), else from LLVM, and is kept there
    key = ir_cache.entry_key(f"{fam}-{op}-{kb}", ir, _FEATURES[fam])
    obj = ir_cache.load(key)
    if obj is None:
        mod = ll.parse_assembly(ir + f"""
attributes #0 = {{ "target-features"="{_FEATURES[fam]}" }}
""")
        mod.verify()
        obj = _state["target_machine"].emit_object(mod)
        _state["ir_compiles"] = _state.get("ir_compiles", 0) + 1
        ir_cache.store(key, obj)
    objects = _state.setdefault("objects", [])      # (kept alive with the engine)
    objects.append(ll.ObjectFileRef.from_data(obj))
    eng.add_object_file(objects[-1])
    eng.finalize_object()
    if op == "bf16":
        return (_PROTO(eng.get_function_address(f"{fam}_gemm_bf16_{kb}")),
                _PROTO_FILTER(eng.get_function_address(f"{fam}_filter_bf16_{kb}")))
    # (the int8 filter, the int8 first stage, is AVX-512 and AVX2 only)
    return (_PROTO(eng.get_function_address(f"{fam}_gemm_u8s8_{kb}")),
            _PROTO_FILTER_U8(eng.get_function_address(f"{fam}_filter_u8s8_{kb}"))
            if fam in INT8_FILTER_FAMILIES else None)


def _function(kb, op, fam):
    with _lock:
        funcs = _state.setdefault("funcs", {})
        if (fam, op, kb) not in funcs:
            funcs[fam, op, kb] = _compile(fam, op, kb)
        return funcs[fam, op, kb]


def available(family=None):
    """Whether bfloat16 tile products can run here: in ``family`` (``'amx'``,
    ``'avx512'``), or in either (None). Checked once per process: CPU
    flags, the switches, OS permission, compilation and a self-test."""
    if family is None:
        return kernel_family("bf16") is not None
    return family in FAMILIES and _usable(family, "bf16")


def _self_test(fam):
    rng = np.random.default_rng(0)
    A = to_bf16(rng.standard_normal((64, 40)).astype(np.float32))
    B = to_bf16(rng.standard_normal((96, 40)).astype(np.float32))
    C = np.zeros((64, 96), np.float32)
    _gemm(_function(A.shape[1] // KB, "bf16", fam)[0], A, pack_b(B), C, 96, 0)
    ref = from_bf16(A).astype(np.float64) @ from_bf16(B).astype(np.float64).T
    bound = (A.shape[1] + 2) * 2.0 ** -24 * (np.abs(from_bf16(A)).astype(np.float64)
                                            @ np.abs(from_bf16(B)).astype(np.float64).T)
    return bool(np.all(np.abs(C - ref) <= bound))


def aligned(shape, dtype, zero=False):
    """An empty (or zeroed) C-contiguous array whose data starts on a
    64-byte cache line.

    A tile row of 64 bytes that does not start on a line touches two, and
    numpy's large allocations start 16 bytes past a page: the filtered
    product (``gemm_filter``, K = 128) then runs at ~330 GMAC/s on this
    Sapphire Rapids VM, against ~590 with both operands aligned. Every
    operand and result of the tile kernels should come from here."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(v) for v in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = (np.zeros if zero else np.empty)(nbytes + LINE, np.uint8)
    off = (-buf.ctypes.data) % LINE
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def bf16_bits(a):
    """``a`` rounded to bfloat16 (nearest, ties to even; subnormal results
    flushed to zero, as the tiles read them) as uint16 bit patterns.
    Values must be finite and below float32's largest bfloat16."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    r[(r & 0x7F80) == 0] = 0
    return r


def to_bf16(a, k=None):
    """``bf16_bits`` of the 2-D ``a``, each row padded with zeros to ``k``
    values (default: the next multiple of ``KB``)."""
    a = np.asarray(a, np.float32)
    n, d = a.shape
    if k is None:
        k = _round_up(d, KB)
    if k % KB or k < d:
        raise ValueError(f"k must be a multiple of {KB} and >= {d}, got {k}")
    out = aligned((n, k), np.uint16, zero=True)
    out[:, :d] = bf16_bits(a)
    return out


def from_bf16(h):
    """float32 values of bfloat16 bit patterns."""
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def pack_b(Bt):
    """The right operand from its rows ``Bt`` (``n x K`` bfloat16 bits, one
    row per output column): zero-padded to a multiple of 32 columns and laid
    out as AMX wants it, pairs of K values interleaved per column in groups
    of 16 columns: ``(n_pad / 16, K / 2, 16, 2)``."""
    Bt = np.asarray(Bt, np.uint16)
    n, k = Bt.shape
    if k % KB:
        raise ValueError(f"rows must hold a multiple of {KB} values, got {k}")
    n_pad = _round_up(n, 32)
    P = np.zeros((n_pad, k), np.uint16)
    P[:n] = Bt
    out = aligned((n_pad // 16, k // 2, 16, 2), np.uint16)
    out[...] = P.reshape(n_pad // 16, 16, k // 2, 2).transpose(0, 2, 1, 3)
    return out


def gemm(A, Bp, C, nj, j0=0, family=None):
    """``C[:, :nj] = A @ B[:, j0:j0 + nj]`` on AMX tiles.

    ``A``: ``(mq, K)`` uint16 (bfloat16 bits), C-contiguous, ``mq`` a
    multiple of 32; ``Bp``: ``pack_b`` output; ``j0``, ``nj``: multiples of
    32 within the packed columns; ``C``: ``(mq, >= nj)`` float32,
    C-contiguous. Everything is checked before the call (a wrong size would
    be a wild memory access). ``family``: see ``available``."""
    mq, k = A.shape
    if not (A.dtype == np.uint16 and A.flags.c_contiguous and Bp.dtype == np.uint16
            and Bp.flags.c_contiguous and C.dtype == np.float32 and C.flags.c_contiguous
            and C.flags.writeable):
        raise TypeError("gemm: A, Bp uint16 and C float32, all C-contiguous")
    if (k % KB or mq % 32 or nj % 32 or j0 % 32 or nj < 0 or j0 < 0
            or Bp.ndim != 4 or Bp.shape[1:] != (k // 2, 16, 2)
            or j0 + nj > Bp.shape[0] * 16 or C.shape[0] != mq or C.shape[1] < nj):
        raise ValueError(f"gemm: shapes A {A.shape}, Bp {Bp.shape}, C {C.shape}, "
                         f"j0 {j0}, nj {nj} do not fit")
    if mq == 0 or nj == 0:
        return C
    return _gemm(_function(k // KB, "bf16", _resolve(family, "bf16"))[0], A, Bp, C, nj, j0)


def _gemm(f, A, Bp, C, nj, j0):
    k = A.shape[1]
    f(A.ctypes.data, k * 2, Bp.ctypes.data + j0 * k * 2, C.ctypes.data,
      C.shape[1] * 4, A.shape[0], nj)
    return C


def gemm_filter(A, Bp, nj, j0, T, OK, OJ, CNT, family=None):
    """``gemm`` fused with a filter: per row ``r`` only the values
    ``<= T[r]`` are kept, appended in column order to ``OK[r]`` (float32)
    with their columns, counted from ``j0``, in ``OJ[r]`` (int32);
    ``CNT[r]`` counts them. The product never leaves L1: no ``mq x nj``
    matrix is written or read back. ``T``: float32 ``(mq,)``; ``OK``
    float32 and ``OJ`` int32, ``(mq, w)`` with ``w >= nj``; ``CNT``: int32
    ``(mq,)``; all C-contiguous (checked)."""
    mq = A.shape[0]
    if T.ndim != 1 or T.shape[0] != mq or CNT.shape != T.shape:
        raise ValueError(f"gemm_filter: shapes A {A.shape}, T {T.shape}, CNT {CNT.shape} "
                         f"do not fit")
    FilterPlan(A, Bp, T, OK, OJ, CNT, family)(0, mq, j0, nj)


def _check_filter_call(name, plan, q0, mq, j0, nj):
    """A filter plan's row and column ranges checked against its arrays
    (a range beyond them would be a wild memory access)."""
    if not (q0 >= 0 and mq >= 0 and mq % 32 == 0 and q0 + mq <= plan._rows
            and mq <= plan._arrays[2].shape[0] and nj >= 0 and nj % 32 == 0
            and j0 >= 0 and j0 % 32 == 0 and j0 + nj <= plan._cols and nj <= plan._width):
        raise ValueError(f"{name}: rows {q0} + {mq} of {plan._rows}, columns "
                         f"{j0} + {nj} of {plan._cols} (output width {plan._width}) "
                         f"do not fit")


class FilterPlan:
    """``gemm_filter`` for many calls on the same arrays: their types,
    layouts and shapes are checked once, each call only its row and column
    ranges (the Python checks cost ~12 us a call otherwise, at ~600 calls
    per CIFAR-10 search).

    ``plan(q0, mq, j0, nj)`` filters rows ``q0 .. q0 + mq`` of ``A`` against
    ``T[:mq]`` into ``OK[:mq]``/``OJ[:mq]``/``CNT[:mq]``: ``mq`` and ``nj``
    multiples of 32, ``mq`` at most ``len(T)``, ``nj`` at most ``OK``'s
    width. The plan holds the arrays (their memory stays valid)."""

    def __init__(self, A, Bp, T, OK, OJ, CNT, family=None):
        arrs = (A, Bp, T, OK, OJ, CNT)
        if not (all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrs)
                and A.dtype == np.uint16 and Bp.dtype == np.uint16 and T.dtype == np.float32
                and OK.dtype == np.float32 and OJ.dtype == np.int32
                and CNT.dtype == np.int32 and OK.flags.writeable and OJ.flags.writeable
                and CNT.flags.writeable):
            raise TypeError("gemm_filter: A, Bp uint16; T, OK float32; OJ, CNT int32; "
                            "all C-contiguous")
        k = A.shape[1] if A.ndim == 2 else -1
        if (A.ndim != 2 or k % KB or k == 0 or Bp.ndim != 4 or Bp.shape[1:] != (k // 2, 16, 2)
                or T.ndim != 1 or CNT.shape != T.shape or OK.ndim != 2
                or OK.shape[0] != T.shape[0] or OJ.shape != OK.shape):
            raise ValueError(f"gemm_filter: shapes A {A.shape}, Bp {Bp.shape}, T {T.shape}, "
                             f"OK {OK.shape}, OJ {OJ.shape}, CNT {CNT.shape} do not fit")
        self._arrays = arrs
        self.family = _resolve(family, "bf16")
        self._f = _function(k // KB, "bf16", self.family)[1]
        self._k = k
        self._rows, self._cols = A.shape[0], Bp.shape[0] * 16
        self._width = OK.shape[1]
        self._ptr = tuple(a.ctypes.data for a in arrs)

    def __call__(self, q0, mq, j0, nj):
        _check_filter_call("gemm_filter", self, q0, mq, j0, nj)
        pa, pb, pt, pok, poj, pcnt = self._ptr
        ctypes.memset(pcnt, 0, 4 * mq)
        if mq == 0 or nj == 0:
            return
        k = self._k
        self._f(pa + q0 * k * 2, k * 2, pb + j0 * k * 2, mq, nj, pt, pok, poj,
                self._width * 4, pcnt)


def available_int8(family=None):
    """Whether the exact uint8 x int8 product (``gemm_u8s8``) runs here: in
    ``family``, or in either (None); with its own self-test."""
    if family is None:
        return kernel_family("u8s8") is not None
    return family in FAMILIES + INT8_FILTER_FAMILIES and _usable(family, "u8s8")


def _self_test_int8(fam):
    rng = np.random.default_rng(0)
    A = rng.integers(0, AVX2_A_MAX + 1 if fam == "avx2" else 256, (32, 200), dtype=np.uint8)
    B = rng.integers(-128, 128, (40, 200), dtype=np.int8)
    Ap = np.zeros((32, 256), np.uint8)
    Ap[:, :200] = A
    C = np.zeros((32, 64), np.int32)
    _gemm_u8s8(_function(256 // 64, "u8s8", fam)[0], Ap, pack_b_s8(B, 256), C, 64)
    return bool(np.array_equal(C[:, :40], A.astype(np.int64) @ B.T.astype(np.int64)))


def pack_b_s8(Bt, k=None):
    """The int8 right operand from its rows ``Bt`` (``n x d`` int8, one row
    per output column), zero-padded to ``k`` values per row (a multiple of
    64; default the next one) and to a multiple of 32 columns, in the AMX
    layout: quads of K values interleaved per column, groups of 16 columns:
    ``(n_pad / 16, k / 4, 16, 4)``."""
    Bt = np.asarray(Bt, np.int8)
    n, d = Bt.shape
    if k is None:
        k = _round_up(d, 64)
    if k % 64 or k < d:
        raise ValueError(f"k must be a multiple of 64 and >= {d}, got {k}")
    n_pad = _round_up(n, 32)
    P = np.zeros((n_pad, k), np.int8)
    P[:n, :d] = Bt
    out = aligned((n_pad // 16, k // 4, 16, 4), np.int8)
    out[...] = P.reshape(n_pad // 16, 16, k // 4, 4).transpose(0, 2, 1, 3)
    return out


def gemm_u8s8(A, Bp, C, nj, family=None):
    """``C[:, :nj] = A @ B`` exactly in int32: ``A`` uint8 ``(mq, k)``
    (``mq`` a multiple of 32, ``k`` of 64; rows may be a strided view with
    unit inner stride), ``Bp`` from ``pack_b_s8`` with the same ``k``,
    ``nj`` a multiple of 32 within its columns, ``C`` int32 ``(mq, >= nj)``
    C-contiguous. Sums must stay within int32: ``k * 255 * 128 < 2**31``
    (``k <= 65,792``; checked)."""
    mq, k = A.shape
    if not (A.dtype == np.uint8 and A.strides[1] == 1 and A.strides[0] >= k
            and Bp.dtype == np.int8 and Bp.flags.c_contiguous and C.dtype == np.int32
            and C.flags.c_contiguous and C.flags.writeable):
        raise TypeError("gemm_u8s8: A uint8 rows (unit inner stride), Bp int8 and C int32 "
                        "C-contiguous")
    if (k % 64 or mq % 32 or nj % 32 or nj < 0 or k * 255 * 128 >= 2 ** 31
            or Bp.ndim != 4 or Bp.shape[1:] != (k // 4, 16, 4)
            or nj > Bp.shape[0] * 16 or C.shape[0] != mq or C.shape[1] < nj):
        raise ValueError(f"gemm_u8s8: shapes A {A.shape}, Bp {Bp.shape}, C {C.shape}, "
                         f"nj {nj} do not fit")
    if mq == 0 or nj == 0:
        return C
    fam = _resolve(family, "u8s8")
    if fam == "avx2":
        _check_avx2_operand("gemm_u8s8", A)
    return _gemm_u8s8(_function(k // 64, "u8s8", fam)[0], A, Bp, C, nj)


def _check_avx2_operand(name, A):
    """The AVX2 int8 product's contract: uint8 values of A up to
    ``AVX2_A_MAX`` (larger ones would saturate its int16 sums: a wrong
    answer, not an error, so it is checked)."""
    if A.size and int(A.max()) > AVX2_A_MAX:
        raise ValueError(f"{name}: the 'avx2' family takes uint8 values up to {AVX2_A_MAX} in A "
                         f"(7-bit operands), got {int(A.max())}")


def _gemm_u8s8(f, A, Bp, C, nj):
    f(A.ctypes.data, A.strides[0], Bp.ctypes.data, C.ctypes.data, C.shape[1] * 4, A.shape[0],
      nj)
    return C


class Int8FilterPlan:
    """The int8 first stage's filtered product (``filter_u8s8`` of the
    AVX-512 VNNI family, see ``tile_ir._avx512_filter_ir``), its arrays
    checked once as in ``FilterPlan``.

    ``A``: uint8 query rows ``q + 128`` ``(rows, K)``, K a multiple of 64;
    ``Bp``: ``pack_b_s8`` of the index rows ``x`` (int8 in -127 .. 127);
    per query row float32 ``QN`` (``|h_q|^2``) and ``QG`` (``-2 s_q``); per
    packed column float32 ``XN`` (``|h_x|^2``), ``XS`` (``s_x``) and int32
    ``XC`` (``128 sum(x)``); ``T``, ``OK``, ``OJ``, ``CNT`` as in
    ``gemm_filter``. ``plan(q0, mq, j0, nj)`` keeps, per query row ``q0 + r``
    and column ``j0 .. j0 + nj``, the keys ``<= T[r]`` (see the kernel for
    the key's formula). ``family``: ``'avx512'`` (VNNI) or ``'avx2'``
    (``A`` at most ``AVX2_A_MAX``: 7-bit query rows ``v + 64``; the kernel
    then subtracts ``XC / 2``)."""

    def __init__(self, A, Bp, QN, QG, XN, XS, XC, T, OK, OJ, CNT, family="avx512"):
        arrs = (A, Bp, T, OK, OJ, CNT, QN, QG, XN, XS, XC)
        if not (all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrs)
                and A.dtype == np.uint8 and Bp.dtype == np.int8
                and all(a.dtype == np.float32 for a in (T, OK, QN, QG, XN, XS))
                and all(a.dtype == np.int32 for a in (OJ, CNT, XC))
                and OK.flags.writeable and OJ.flags.writeable and CNT.flags.writeable):
            raise TypeError("Int8FilterPlan: A uint8, Bp int8; T, OK, QN, QG, XN, XS float32; "
                            "OJ, CNT, XC int32; all C-contiguous")
        k = A.shape[1] if A.ndim == 2 else -1
        cols = Bp.shape[0] * 16 if Bp.ndim == 4 else -1
        if (A.ndim != 2 or k % 64 or k == 0 or Bp.ndim != 4 or Bp.shape[1:] != (k // 4, 16, 4)
                or T.ndim != 1 or CNT.shape != T.shape or OK.ndim != 2
                or OK.shape[0] != T.shape[0] or OJ.shape != OK.shape
                or QN.shape != (A.shape[0],) or QG.shape != QN.shape
                or any(a.shape != (cols,) for a in (XN, XS, XC))):
            raise ValueError(f"Int8FilterPlan: shapes A {A.shape}, Bp {Bp.shape}, T {T.shape}, "
                             f"OK {OK.shape}, QN {QN.shape}, XN {XN.shape} do not fit")
        self._arrays = arrs
        if family not in INT8_FILTER_FAMILIES:
            raise ValueError(f"Int8FilterPlan: family must be one of {INT8_FILTER_FAMILIES}, "
                             f"got {family!r}")
        self.family = _resolve(family, "u8s8")
        if family == "avx2":
            _check_avx2_operand("Int8FilterPlan", A)
        self._f = _function(k // 64, "u8s8", self.family)[1]
        self._k = k
        self._rows, self._cols = A.shape[0], cols
        self._width = OK.shape[1]
        self._ptr = tuple(a.ctypes.data for a in arrs)

    def __call__(self, q0, mq, j0, nj):
        _check_filter_call("Int8FilterPlan", self, q0, mq, j0, nj)
        pa, pb, pt, pok, poj, pcnt, pqn, pqg, pxn, pxs, pxc = self._ptr
        ctypes.memset(pcnt, 0, 4 * mq)
        if mq == 0 or nj == 0:
            return
        k = self._k
        self._f(pa + q0 * k, k, pb + j0 * k, mq, nj, pt, pok, poj, self._width * 4, pcnt,
                pqn + 4 * q0, pqg + 4 * q0, pxn + 4 * j0, pxs + 4 * j0, pxc + 4 * j0)
