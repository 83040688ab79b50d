"""Numba kernels for exact (squared) Euclidean nearest-neighbour search.

One exact distance defines every answer: integers in int64 (exact), floats
as a float64 sum of squared differences in one fixed order (eight lanes,
``sqdist_float``). Every backend only
produces candidate sets that provably contain the true neighbours under that
distance; the final order is by (distance, index), so answers never depend
on the backend, the thread count or the chunk size.

Sorted top-k lists are kept as two arrays (distance, index), ascending by
(key, index). For farthest-neighbour search the key is the negated distance.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import cpu
from ._jit import twin


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the cache line of ``arr[i, j]`` (2-D array) into the caches
    (``llvm.prefetch``: read, locality 2, i.e. ``prefetcht1``: into L2,
    which holds more misses in flight than L1; measured ~5 % faster than
    ``prefetcht0`` on whole 3 KB rows). Random rows of the index are
    latency-bound; fetching the next candidates' rows while the current one
    is computed overlaps their misses."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, args[1], signature.args[1], types.intp),
               context.cast(builder, args[2], signature.args[2], types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, cgutils.voidptr_t), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()
    return sig, codegen


# AVX-512 VNNI for exact uint8 distances (decided when numba compiles;
# FASTNN_VNNI=0 or FASTNN_AVX512=0: off)
VNNI = cpu.vnni_exact_distance()


@intrinsic
def _dot_u8s8(typingctx, a, b, n64):
    """``sum_t a[t] * b[t]`` over the first ``64 n64`` entries of the
    C-contiguous 1-D uint8 ``a`` and int8 ``b``, as int64: exact (per int32
    lane at most ``n64 * 4 * 255 * 128 < 2**31`` for ``n64 < 16,000``).
    With AVX-512 VNNI, 64 products per ``vpdpbusd``; elsewhere (decided when
    compiled) a plain loop, so the code compiles on any CPU."""
    if not (isinstance(a, types.Array) and isinstance(b, types.Array)):
        return None
    sig = types.int64(a, b, n64)

    def codegen(context, builder, signature, args):
        A = context.make_array(signature.args[0])(context, builder, args[0])
        B = context.make_array(signature.args[1])(context, builder, args[1])
        n = context.cast(builder, args[2], signature.args[2], types.intp)
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        pa = builder.bitcast(A.data, cgutils.voidptr_t)
        pb = builder.bitcast(B.data, cgutils.voidptr_t)
        if VNNI:
            v16 = ir.VectorType(i32, 16)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                "llvm.x86.avx512.vpdpbusd.512")
            acc = cgutils.alloca_once_value(builder, ir.Constant(v16, None))
            with cgutils.for_range(builder, n) as loop:
                off = builder.mul(loop.index, ir.Constant(loop.index.type, 64))
                la = builder.load(builder.bitcast(builder.gep(pa, [off]), v16.as_pointer()),
                                  align=1)
                lb = builder.load(builder.bitcast(builder.gep(pb, [off]), v16.as_pointer()),
                                  align=1)
                builder.store(builder.call(fn, [builder.load(acc), la, lb]), acc)
            vec = builder.load(acc)
            total = ir.Constant(i64, 0)
            for t in range(16):
                total = builder.add(total, builder.sext(
                    builder.extract_element(vec, ir.Constant(i32, t)), i64))
            return total
        total = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
        nb = builder.mul(n, ir.Constant(n.type, 64))
        with cgutils.for_range(builder, nb) as loop:
            xa = builder.zext(builder.load(builder.gep(pa, [loop.index])), i64)
            xb = builder.sext(builder.load(builder.gep(pb, [loop.index])), i64)
            builder.store(builder.add(builder.load(total), builder.mul(xa, xb)), total)
        return builder.load(total)
    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _sqdist_u8(q8, qn, x, xs, xn):
    """Exact squared distance of uint8 rows from a dot product: ``q8 = q -
    128`` (int8), ``qn = |q|^2``, ``xs = sum(x)``, ``xn = |x|^2`` (int64):
    ``|q - x|^2 = qn + xn - 2 (q8 . x + 128 xs)``, all in exact integers."""
    d = x.shape[0]
    n64 = d // 64
    dot = _dot_u8s8(x, q8, n64)
    for t in range(n64 * 64, d):
        dot += np.int64(x[t]) * np.int64(q8[t])
    return np.float64(qn + xn - 2 * (dot + 128 * xs))


@njit(cache=True, nogil=True)
def abs_max_bits(B, mask):
    """The largest ``B[i] & mask``: with ``B`` the bits of float data
    (uint32 for float32, uint64 for float64) and ``mask`` clearing the sign,
    the bits of the largest magnitude, NaN and infinity included (their bit
    patterns lie above every finite one). An integer maximum vectorises; a
    float one does not (NaN ordering), and a float sum needs a second pass
    for the magnitude."""
    m = mask - mask
    for i in range(B.shape[0]):
        v = B[i] & mask
        if v > m:
            m = v
    return m


@njit(cache=True, nogil=True)
def u8_row_stats(A, s, sq, A8):
    """Per uint8 row: the sum and the sum of squares (int64); ``A8`` (int8,
    same shape, or empty rows to skip) receives ``A - 128``."""
    shift = A8.shape[0] == A.shape[0]
    for i in range(A.shape[0]):
        a = np.int64(0)
        b = np.int64(0)
        for t in range(A.shape[1]):
            v = np.int32(A[i, t])
            a += v
            b += v * v
        s[i] = a
        sq[i] = b
        if shift:
            for t in range(A.shape[1]):
                A8[i, t] = np.int8(np.int32(A[i, t]) - 128)


@njit(cache=True, nogil=True)
def u8_centred_stats(A, c, c2, s, sq):
    """Per uint8 row in one pass: ``|a - c|^2`` (float64 of an exact
    integer; ``c`` integer-valued) and the row's sum and sum of squares
    (int64). Accumulates in int32 lanes (exact while ``d * 255**2 <
    2**31``, checked by the caller)."""
    d = A.shape[1]
    ci = np.empty(d, np.int32)
    for t in range(d):
        ci[t] = np.int32(c[t])
    for i in range(A.shape[0]):
        a2 = np.int32(0)
        a1 = np.int32(0)
        v2 = np.int32(0)
        for t in range(d):
            x = np.int32(A[i, t])
            v = x - ci[t]
            a1 += x
            a2 += x * x
            v2 += v * v
        c2[i] = np.float64(v2)
        s[i] = a1
        sq[i] = a2


@njit(cache=True, nogil=True, inline="always")
def _prefetch_row(A, i):
    """Prefetch row ``i`` of the C-contiguous 2-D ``A``, line by line."""
    step = max(1, 64 // A.itemsize)
    for c in range(0, A.shape[1], step):
        _prefetch(A, i, c)


@njit(cache=True, nogil=True)
def sqdist_int(a, b):
    s = np.int64(0)
    for t in range(a.shape[0]):
        d = np.int64(a[t]) - np.int64(b[t])
        s += d * d
    return np.float64(s)


@intrinsic
def _sq_lanes8(typingctx, a, b, n8):
    """``sum_t (a[t] - b[t])^2`` over the first ``8 n8`` entries of two
    1-D float arrays (values converted to float64), in a fixed order:
    lane ``l`` sums the entries ``t = l mod 8`` in index order, then
    ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``.

    Written as ``<8 x double>`` IR without fast-math flags: LLVM must keep
    every operation (no reassociation, no fused multiply-add), so the
    result is the same on every CPU and in every kernel that calls it,
    while the CPU runs eight lanes at once (a single float64 chain is
    latency-bound: ~240 ns for a 324-value HOG row, ~80 here). Rows that
    are not contiguous take the same eight scalar chains."""
    if not (isinstance(a, types.Array) and isinstance(b, types.Array)
            and a.ndim == 1 and b.ndim == 1
            and all(isinstance(t.dtype, (types.Float, types.Integer)) for t in (a, b))):
        return None
    sig = types.float64(a, b, n8)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        v8 = ir.VectorType(f64, 8)
        n = context.cast(builder, args[2], signature.args[2], types.intp)
        arrs = []
        for k in range(2):
            aty = signature.args[k]
            arrs.append((aty, context.make_array(aty)(context, builder, args[k])))
        acc = cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8))
        contiguous = all(aty.layout == "C" for aty, _ in arrs)
        with cgutils.for_range(builder, n) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 8))
            vals = []
            for aty, ary in arrs:
                lt = context.get_value_type(aty.dtype)
                if contiguous:
                    ptr = builder.gep(ary.data, [off])
                    v = builder.load(builder.bitcast(ptr, ir.VectorType(lt, 8).as_pointer()),
                                     align=aty.dtype.bitwidth // 8)
                else:
                    v = ir.Constant(ir.VectorType(lt, 8), None)
                    for l in range(8):
                        idx = builder.add(off, ir.Constant(off.type, l))
                        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [idx])
                        v = builder.insert_element(v, builder.load(ptr), ir.Constant(
                            ir.IntType(32), l))
                if isinstance(aty.dtype, types.Integer):
                    # (as np.float64(x): only integer-typed branches that
                    # never run for integer data reach this)
                    v = (builder.sitofp if aty.dtype.signed else builder.uitofp)(v, v8)
                elif lt != f64:
                    v = builder.fpext(v, v8)
                vals.append(v)
            d = builder.fsub(vals[0], vals[1])
            builder.store(builder.fadd(builder.load(acc), builder.fmul(d, d)), acc)
        vec = builder.load(acc)
        lane = [builder.extract_element(vec, ir.Constant(ir.IntType(32), l)) for l in range(8)]
        return builder.fadd(builder.fadd(builder.fadd(lane[0], lane[1]),
                                         builder.fadd(lane[2], lane[3])),
                            builder.fadd(builder.fadd(lane[4], lane[5]),
                                         builder.fadd(lane[6], lane[7])))
    return sig, codegen


@njit(cache=True, nogil=True)
def sqdist_float(a, b):
    """The exact squared distance of float rows: float64 differences, the
    first ``8 (d // 8)`` summed in eight lanes (``_sq_lanes8``), the rest
    added in index order. Every backend measures with this one function."""
    n8 = a.shape[0] // 8
    s = _sq_lanes8(a, b, n8)
    for t in range(8 * n8, a.shape[0]):
        d = np.float64(a[t]) - np.float64(b[t])
        s += d * d
    return s


@njit(cache=True, nogil=True)
def sqdist_int32(a, b):
    # byte data: |a - b|^2 summed in int32 is exact while d * 255**2 < 2**31.
    # numba widens integer arithmetic to int64; truncating every step back to
    # int32 lets LLVM keep 32-bit lanes (vpmaddwd): ~2x faster, same result
    s = np.int32(0)
    for t in range(a.shape[0]):
        d = np.int32(np.int32(a[t]) - np.int32(b[t]))
        s = np.int32(s + np.int32(d * d))
    return np.float64(s)


@njit(cache=True, nogil=True)
def sqdist(a, b, is_int, acc32=False):
    """Exact squared distance: int64 (or int32 when ``acc32``) for integers,
    a float64 sum in index order for floats."""
    if is_int:
        if acc32:
            return sqdist_int32(a, b)
        return sqdist_int(a, b)
    return sqdist_float(a, b)


@njit(cache=True, nogil=True)
def topk_insert(kd, ki, count, d, j):
    """Insert (d, j) into the ascending top list (kd, ki) of which ``count``
    entries are filled; returns the new count. Ties keep the lower index first."""
    k = kd.shape[0]
    if count == k:
        if d > kd[k - 1] or (d == kd[k - 1] and j > ki[k - 1]):
            return count
        pos = k - 1
    else:
        pos = count
        count += 1
    while pos > 0 and (kd[pos - 1] > d or (kd[pos - 1] == d and ki[pos - 1] > j)):
        kd[pos] = kd[pos - 1]
        ki[pos] = ki[pos - 1]
        pos -= 1
    kd[pos] = d
    ki[pos] = j
    return count


# --------------------------------------------------------------------------
# Brute force: GEMM tiles (computed by BLAS outside) + fused top-k merge
# --------------------------------------------------------------------------
def _merge_tile_py(G, qn, xn, j0, sign, kd, ki, counts):
    """Merge one tile of approximate squared distances into running top lists.

    ``G`` (nq, nt) holds q.x dot products, the distance is qn + xn - 2G
    clamped at 0; ``sign`` is +1 (nearest) or -1 (farthest).
    """
    nq, nt = G.shape
    kk = kd.shape[1]
    for i in range(nq):
        c = counts[i]
        kdi = kd[i]
        kii = ki[i]
        g = G[i]
        qni = qn[i]
        # (a plain compare with the current worst key skips nearly every
        # distance; the insert keeps ties by row)
        worst = kdi[kk - 1] if c == kk else np.inf
        for t in range(nt):
            d = qni + xn[t] - 2.0 * g[t]
            if d < 0.0:
                d = 0.0
            key = sign * d
            if key <= worst:
                c = topk_insert(kdi, kii, c, key, j0 + t)
                if c == kk:
                    worst = kdi[kk - 1]
        counts[i] = c


merge_tile_serial = njit(cache=True, nogil=True)(_merge_tile_py)


def _exact_scan_py(Q, X, rows, sign, is_int, kd_out, ki_out):
    """Full exact scan for the query rows ``rows`` (fallback and reference)."""
    k = kd_out.shape[1]
    for r in prange(rows.shape[0]):
        i = rows[r]
        kd = np.empty(k, np.float64)
        ki = np.empty(k, np.int64)
        c = np.int64(0)      # (not a literal: one compiled topk_insert)
        for j in range(X.shape[0]):
            c = topk_insert(kd, ki, c, sign * sqdist(Q[i], X[j], is_int), j)
        for t in range(k):
            kd_out[i, t] = sign * kd[t]
            ki_out[i, t] = ki[t]


exact_scan_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_exact_scan_py, "parallel"))
exact_scan_serial = njit(cache=True, nogil=True)(_exact_scan_py)


def _select_exact_py(A, Q, X, sign, is_int, err_q, err_x_max, k, kd_out, ki_out):
    """Top-k of each query from its approximate squared distances to every
    index row (``A[i]``, each within ``err_q[i] + err_x_max`` of the exact
    one), for a large k: the k-th smallest key by selection, exact
    distances for the rows that could reach it, then a stable sort (ties keep
    the lower index). ``O(n log n)`` per query where the sorted top list's
    insertions would cost ``O(k^2)``."""
    nq, n = A.shape
    for i in prange(nq):
        keys = np.empty(n, np.float64)
        for j in range(n):
            keys[j] = sign * A[i, j]
        kth = np.partition(keys, k - 1)[k - 1]
        lim = kth + 2.0 * (err_q[i] + err_x_max)
        m = 0
        for j in range(n):
            if sign * A[i, j] <= lim:
                m += 1
        cj = np.empty(m, np.int64)
        ck = np.empty(m, np.float64)
        m = 0
        for j in range(n):
            if sign * A[i, j] <= lim:
                cj[m] = j
                ck[m] = sign * sqdist(Q[i], X[j], is_int)
                m += 1
        order = np.argsort(ck, kind="mergesort")     # stable: index order on ties
        for t in range(k):
            kd_out[i, t] = sign * ck[order[t]]
            ki_out[i, t] = cj[order[t]]


select_exact_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_select_exact_py, "parallel"))
select_exact_serial = njit(cache=True, nogil=True)(_select_exact_py)


def _rerank_py(Q, X, cand_i, cand_d, counts, sign, is_int, err_q, err_x_max, k,
               kd_out, ki_out, need_full):
    """Exact distances for each query's approximate candidates, final top-k.

    The candidates are the ``kk >= k`` best by approximate key, each within
    ``err_q[i] + err_x_max`` of its exact key. If a point left out could
    still reach (or tie) the k-th exact key, the query is flagged for a full
    exact scan (``need_full``).
    """
    nq, kk = cand_i.shape
    n = X.shape[0]
    for i in prange(nq):
        kd = np.empty(k, np.float64)
        ki = np.empty(k, np.int64)
        c = np.int64(0)
        for t in range(counts[i]):
            j = cand_i[i, t]
            c = topk_insert(kd, ki, c, sign * sqdist(Q[i], X[j], is_int), j)
        flag = False
        if kk < n:
            bound = cand_d[i, kk - 1] - 2.0 * (err_q[i] + err_x_max)
            if not (bound > kd[k - 1]):
                flag = True
        need_full[i] = flag
        for t in range(k):
            kd_out[i, t] = sign * kd[t]
            ki_out[i, t] = ki[t]


rerank_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_rerank_py, "parallel"))
rerank_serial = njit(cache=True, nogil=True)(_rerank_py)


# --------------------------------------------------------------------------
# Pairwise distances: finish a GEMM tile
# --------------------------------------------------------------------------
def _finish_pairwise_py(G, qn, xn, squared, out):
    nq, nt = G.shape
    for i in prange(nq):
        for t in range(nt):
            d = qn[i] + xn[t] - 2.0 * G[i, t]
            if d < 0.0:
                d = 0.0
            if not squared:
                d = math.sqrt(d)
            out[i, t] = d


finish_pairwise_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_finish_pairwise_py, "parallel"))
finish_pairwise_serial = njit(cache=True, nogil=True)(_finish_pairwise_py)


@njit(cache=True, nogil=True)
def finish_pairwise_u8(C, xs, xn, yn, squared, out):
    """Rows of the distance matrix of uint8 data from exact integer
    products ``C[i, j] = x_i . (y_j - 128)`` (int32, ``amx.gemm_u8s8``):
    ``|x_i - y_j|^2 = xn[i] + yn[j] - 2 (C[i, j] + 128 xs[i])`` with the
    rows' squared norms ``xn``/``yn`` and the sums ``xs`` of the ``x`` rows
    (int64), an exact integer (so it is sklearn's float64 value, and 0 on a
    diagonal); its square root unless ``squared``."""
    for i in range(out.shape[0]):
        x2 = xn[i] - 256 * xs[i]
        for j in range(out.shape[1]):
            v = np.float64(x2 + yn[j] - 2 * np.int64(C[i, j]))
            out[i, j] = v if squared else math.sqrt(v)


def _centred_sqnorms_py(A, c, exact, out):
    """``|a - c|^2`` per row (``c = 0``: squared norms); ``exact``: integer
    rows and centre, summed in int64, else a float64 sum in index order."""
    for j in prange(A.shape[0]):
        if exact:
            s = np.int64(0)
            for t in range(A.shape[1]):
                v = np.int64(A[j, t]) - np.int64(c[t])
                s += v * v
            out[j] = np.float64(s)
        else:
            s = 0.0
            for t in range(A.shape[1]):
                v = np.float64(A[j, t]) - c[t]
                s += v * v
            out[j] = s


centred_sqnorms_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_centred_sqnorms_py, "parallel"))
centred_sqnorms_serial = njit(cache=True, nogil=True)(_centred_sqnorms_py)
# for the projection's bounds only: the bound of a float sum of squares,
# (d + 4) u |v|^2, holds in any order, so LLVM may reassociate (SIMD lanes:
# the index-order chain is latency-bound, 5x slower on HOG rows) and contract
centred_sqnorms_bound = njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(
    twin(_centred_sqnorms_py, "bound"))


def _centre_scale_py(A, c, scale, out):
    """``out = (A - c) * scale`` in float64 (exact for integers: ``c`` is then
    integer, ``scale`` a power of two)."""
    for j in range(A.shape[0]):
        for t in range(A.shape[1]):
            out[j, t] = (np.float64(A[j, t]) - c[t]) * scale


centre_scale_serial = njit(cache=True, nogil=True)(_centre_scale_py)
