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
def _exact(Q, i, X, j, is_int, ux):
    """The exact squared distance of query ``i`` (row ``qrow[i]`` of ``Q``)
    to row ``j``. ``ux``: ``(acc32, use_u8, Q8, QN, XS, XN, qrow)``; with
    ``use_u8`` (uint8 data on a VNNI CPU) the dot-product form
    ``_sqdist_u8``, else ``sqdist``; both give the same exact integer."""
    r = ux[6][i]
    if is_int and ux[1]:
        return _sqdist_u8(ux[2][r], ux[3][r], X[j], ux[4][j], ux[5][j])
    return sqdist(Q[r], X[j], is_int, ux[0])


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
    for i in prange(nq):
        c = counts[i]
        for t in range(nt):
            d = qn[i] + xn[t] - 2.0 * G[i, t]
            if d < 0.0:
                d = 0.0
            c = topk_insert(kd[i], ki[i], c, sign * d, j0 + t)
        counts[i] = c


merge_tile_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_merge_tile_py, "parallel"))
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
# Pruned exact search with projection lower bounds
#   |q - x| >= |w(q) - w(x)|,  w(v) = (P(v - mu), |residual of v - mu|)
# --------------------------------------------------------------------------
_SUB = 64          # points per sub-block (its minimum key skips it whole)
_PF = 6            # stage 2 prefetches the rows of the candidate this far ahead
_PF3 = 2           # stage 3 (exact distances): this far ahead


@njit(cache=True, nogil=True)
def _lim(thr, scale, add, pad):
    """A bound threshold in scaled key units: ``(scale sqrt(thr) + add)^2``
    (rounded up) ``+ pad``."""
    st = math.sqrt(thr) * scale + add
    return st * st * (1.0 + 1e-12) + pad


@njit(cache=True, nogil=True, inline="always")
def _sqrt_up(x):
    """An upper bound of ``sqrt(x)`` (x >= 0; the rounded root times
    ``1 + 1e-15``)."""
    return math.sqrt(x) * (1.0 + 1e-15)


@njit(cache=True, nogil=True, inline="always")
def _lb_dist(acc, sl, pad, scale):
    """A proven lower bound of an unscaled distance from ``acc``, a scaled
    squared distance between stored vectors computed within ``sl``, the
    stored vectors lying within ``pad`` (together) of the exact ones:
    ``(sqrt(acc - sl) - pad) / scale``, every rounding directed down by
    relative factors far above float64's. Negative: no information."""
    v = acc - sl
    if v <= 0.0:
        return -1.0
    return ((math.sqrt(v) * (1.0 - 1e-14) - pad * (1.0 + 1e-14)) / scale) * (1.0 - 1e-15)


@njit(cache=True, nogil=True)
def _f32_up(x):
    """The smallest float32 >= ``x`` (float64): ``key <= x`` and
    ``key <= _f32_up(x)`` then differ only for ``key == _f32_up(x) > x``."""
    f = np.float32(x)
    if np.float64(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return f


@njit(cache=True, nogil=True, inline="always")
def _count_le(g, u, L, t):
    """How many keys of sub-block ``u`` of ``g[:L]`` are <= ``t`` (1 for a
    partial sub-block: it is simply scanned). A counting sum vectorises in
    numba (a float minimum does not); the loop is written so that LLVM sees
    non-negative indices (else it emits gathers for numba's negative-index
    wraparound)."""
    if (u + 1) * _SUB > L:
        return 1
    s = 0
    for j in range(u * _SUB, u * _SUB + _SUB):
        s += g[j] <= t
    return s


@njit(cache=True, nogil=True)
def _sqdist_float4(q, a, b, c, e):
    """``sqdist_float(q, .)`` of four rows (independent sums: the CPU
    overlaps them)."""
    return sqdist_float(q, a), sqdist_float(q, b), sqdist_float(q, c), sqdist_float(q, e)


@njit(cache=True, nogil=True, inline="always")
def _seen(seen, j, b):
    """Whether row ``j`` was measured for query ``b`` of the block."""
    return (seen[j, b >> 6] >> np.uint64(b & 63)) & np.uint64(1) != 0


@njit(cache=True, nogil=True, inline="always")
def _mark(seen, j, b):
    seen[j, b >> 6] |= np.uint64(1) << np.uint64(b & 63)


@njit(cache=True, nogil=True)
def _insert_exact(Q, i, X, js, m, is_int, ux, kd, ki, c):
    """Exact distances of query ``i`` to the rows ``js[:m]`` (none measured
    before for this query: the callers keep a bit per row, ``seen``) inserted into
    the top list ``(kd, ki)`` (``c`` filled); returns the new count. Float
    rows go four at a time; the next rows are prefetched."""
    t = 0
    q = Q[ux[6][i]]
    for u in range(min(m, 4)):
        _prefetch_row(X, js[u])
    if not is_int:
        while t + 4 <= m:
            for u in range(t + 4, min(m, t + 8)):
                _prefetch_row(X, js[u])
            d0, d1, d2, d3 = _sqdist_float4(q, X[js[t]], X[js[t + 1]], X[js[t + 2]],
                                            X[js[t + 3]])
            c = topk_insert(kd, ki, c, d0, js[t])
            c = topk_insert(kd, ki, c, d1, js[t + 1])
            c = topk_insert(kd, ki, c, d2, js[t + 2])
            c = topk_insert(kd, ki, c, d3, js[t + 3])
            t += 4
    while t < m:
        if t + 1 < m:
            _prefetch_row(X, js[t + 1])
        c = topk_insert(kd, ki, c, _exact(Q, i, X, js[t], is_int, ux), js[t])
        t += 1
    return c


@njit(cache=True, nogil=True, inline="always")
def _measure_seeds(b, i, Q, X, is_int, ux, scale, lim1_add, slack1, sib, c, kd, ki,
                   kc, lim1, n_ex, js, seen):
    """Exact distances of the new first k seeds of row ``b`` (a seed ranked
    below k now was so when it entered, and was measured then: ``seen``):
    the running threshold ``lim1``. Seeds ranked k and beyond are measured at the end.
    (Measuring only now and then, or predicting the threshold from the
    keys, kept far more keys.)"""
    k = kd.shape[1]
    m = 0
    for t in range(min(c, k)):
        j = sib[t]
        if not _seen(seen, j, b):
            js[m] = j
            _mark(seen, j, b)
            m += 1
    if m == 0:
        return          # (a call with nothing to insert still costs ~0.2 us)
    kc[b] = _insert_exact(Q, i, X, js, np.int64(m), is_int, ux, kd[b], ki[b],
                          np.int64(kc[b]))
    n_ex[b] += m
    if kc[b] == k:
        lim1[b] = _lim(kd[b, k - 1], scale, lim1_add[i], slack1[i])


@njit(cache=True, nogil=True)
def gather_rows(X, rows, out):
    """``out[t, :d] = X[rows[t]]`` (``out`` may be wider: its padding
    columns are left as they are)."""
    d = X.shape[1]
    for t in range(rows.shape[0]):
        x = X[rows[t]]
        o = out[t]
        for c in range(d):
            o[c] = x[c]


@njit(cache=True, nogil=True)
def pack_rows_s8(A, rows, out):
    """``amx.pack_b_s8`` of the rows ``A[rows]`` into ``out``
    (``(n_pad / 16, k / 4, 16, 4)`` int8, zeroed where no row or value
    is)."""
    d = A.shape[1]
    k4 = out.shape[1]
    for g in range(out.shape[0]):
        for c in range(16):
            r = 16 * g + c
            if r < rows.shape[0]:
                a = A[rows[r]]
                for t in range(k4):
                    for u in range(4):
                        v = 4 * t + u
                        out[g, t, c, u] = a[v] if v < d else 0
            else:
                for t in range(k4):
                    for u in range(4):
                        out[g, t, c, u] = 0


@njit(cache=True, nogil=True)
def window_exact(C, rows, XS, XN, QN, qrow, q0, nb, scale, lim1_add, slack1, kd, ki, kc,
                 lim1, sd, si, sc, seen):
    """The first stage-1 tile of a uint8 block, exactly: ``C[p, b]`` holds
    the integer product ``x . (q - 128)`` of row ``rows[p]`` of ``X`` and
    query ``q0 + b`` (``gemm_u8s8``), so ``|q - x|^2 = |q|^2 + |x|^2 -
    2 (C + 128 sum(x))`` exactly (``QN``/``XS``/``XN``, ``qrow`` maps the
    query to its row). Per query: the exact top-k of the tile (ties by
    row), every row marked measured (``seen``), the stage-1 limit ``lim1``
    from the k-th distance, and the seed list closed (seeds ``-inf``: the
    exact threshold replaces them)."""
    k = kd.shape[1]
    qn = np.empty(nb, np.int64)
    thr = np.empty(nb, np.float64)        # k-th distance so far (a plain compare
    for b in range(nb):                   # skips nearly every pair)
        qn[b] = QN[qrow[q0 + b]]
        thr[b] = kd[b, k - 1] if kc[b] == k else np.inf
    nw = seen.shape[1]
    for p in range(rows.shape[0]):
        j = rows[p]
        base = XN[j] - 256 * XS[j]
        c = C[p]
        for b in range(nb):
            d = np.float64(qn[b] + base - 2 * np.int64(c[b]))
            if d <= thr[b]:
                kc[b] = topk_insert(kd[b], ki[b], kc[b], d, j)
                if kc[b] == k:
                    thr[b] = kd[b, k - 1]
        for w in range(nw):
            bits = min(64, nb - 64 * w)
            if bits > 0:
                seen[j, w] |= np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - bits)
    for b in range(nb):
        i = q0 + b
        if kc[b] == k:
            lim1[b] = _lim(kd[b, k - 1], scale, lim1_add[i], slack1[i])
        for t in range(sd.shape[1]):
            sd[b, t] = -np.inf
            si[b, t] = ki[b, min(t, kc[b] - 1)]
        sc[b] = sd.shape[1]


@njit(cache=True, nogil=True)
def tile_limits(sd, sc, lim1, nb, T):
    """Per row the float32 filter of the next tile: the larger of the seed
    limit and the running threshold (rounded up; every key the tile's scan
    could use passes it); ``-inf`` for the padding rows ``nb ..``."""
    n_seed = sd.shape[1]
    for b in range(T.shape[0]):
        if b >= nb:
            T[b] = -np.inf
            continue
        slim = sd[b, n_seed - 1] if sc[b] == n_seed else np.inf
        T[b] = _f32_up(max(slim, lim1[b]))


@njit(cache=True, nogil=True)
def scan_sparse(OK, OJ, CNT, L, j0, perm, q0, nb, Q, X, is_int, ux, scale, lim1_add, slack1, sd,
                si, sc, kd, ki, kc, lim1, n_ex, cand_k, cand_j, n_cand, js, seen):
    """``scan_collect`` for a tile after the first, from the output of the
    AMX filter (``gemm_filter`` with ``tile_limits``): per row only the keys
    at or below the row's limit, in column order (``OK``/``OJ``/``CNT``);
    columns ``L ..`` are padding."""
    n_seed = sd.shape[1]
    cap = cand_k.shape[1]
    for b in range(nb):
        if CNT[b] == 0:
            continue            # (no key: no new seed, no candidate)
        i = q0 + b
        c = sc[b]
        sdb = sd[b]
        sib = si[b]
        nc = n_cand[b]
        lim = lim1[b]
        slim = sdb[n_seed - 1] if c == n_seed else np.inf
        for t in range(CNT[b]):
            j = np.int64(OJ[b, t])
            if j >= L:
                break
            v = np.float64(OK[b, t])
            if v < slim:
                c = topk_insert(sdb, sib, c, v, perm[j0 + j])
                slim = sdb[n_seed - 1] if c == n_seed else np.inf
            if v <= lim:
                # (the append is written out here and in scan_collect: an
                # inlined helper taking the arrays measured 25 % slower at
                # k=10 on CIFAR HOG)
                if nc < cap:
                    cand_k[b, nc] = OK[b, t]
                    cand_j[b, nc] = perm[j0 + j]
                nc += 1
        sc[b] = c
        _measure_seeds(b, i, Q, X, is_int, ux, scale, lim1_add, slack1, sib, c, kd,
                       ki, kc, lim1, n_ex, js, seen)
        n_cand[b] = nc


@njit(cache=True, nogil=True)
def scan_collect(G, L, j0, perm, q0, Q, X, is_int, ux, scale, lim1_add, slack1, sd, si, sc,
                 kd, ki, kc, lim1, n_ex, cand_k, cand_j, n_cand, js, seen):
    """Stage 1 on one product tile: keys of the points at positions
    ``j0 .. j0 + L`` of the stage-1 order (``G[:, :L]``; ``G`` may be
    wider; ``perm`` maps a position to its row of ``X``) for the queries
    ``q0 .. q0 + G.shape[0]`` (``G[b, t] ~ |w1(q) - w1(x)|^2`` within
    ``slack1``, ``w1`` within ``lim1_add`` of the exact vectors).

    Per query row, over sub-blocks of ``_SUB`` keys that hold a key at or
    below the current thresholds (counted vectorised, the rest skipped):
    the ``sd.shape[1]`` smallest keys so far (``sd``/``si``/``sc``), whose
    first k get their exact distances when they enter (running top-k
    ``kd``/``ki``/``kc``; ``n_ex`` counts them), which give a running
    stage-1 threshold ``lim1``; and the keys at or below it, appended to
    ``cand_k``/``cand_j`` (``n_cand`` counts them, also beyond the
    capacity: the caller then recomputes that query's keys). Thresholds
    only fall, so every key under the final threshold has been appended.
    No key matrix is stored.
    """
    nb = G.shape[0]
    nsb = (L + _SUB - 1) // _SUB
    n_seed = sd.shape[1]
    cap = cand_k.shape[1]
    for b in range(nb):
        i = q0 + b
        g = G[b]
        c = sc[b]
        sdb = sd[b]
        sib = si[b]
        nc = n_cand[b]
        lim = lim1[b]
        j_first = 0
        while c < n_seed and j_first < L:       # the first seeds, unfiltered
            c = topk_insert(sdb, sib, c, np.float64(g[j_first]), perm[j0 + j_first])
            j_first += 1
        # ---- one filtered pass: seeds below the seed limit, candidates
        # below the threshold of the earlier tiles (none yet: after seeds)
        first = lim == np.inf
        # (a seed list still short here means the tile is used up: every
        # point so far is a seed)
        slim = sdb[n_seed - 1] if c == n_seed else np.inf
        t32 = _f32_up(slim if first else max(slim, lim))
        for u in range(nsb):
            if _count_le(g, u, L, t32) == 0:
                continue
            for j in range(u * _SUB, min(L, (u + 1) * _SUB)):
                v = np.float64(g[j])
                if v < slim and j >= j_first:
                    c = topk_insert(sdb, sib, c, v, perm[j0 + j])
                    slim = sdb[n_seed - 1]
                    # the sub-block filter follows the falling seed limit (kept
                    # at its first value, it let nearly every sub-block of a
                    # cluster's tile through at small k)
                    t32 = _f32_up(slim if first else max(slim, lim))
                if not first and v <= lim:
                    if nc < cap:
                        cand_k[b, nc] = g[j]
                        cand_j[b, nc] = perm[j0 + j]
                    nc += 1
        sc[b] = c
        _measure_seeds(b, i, Q, X, is_int, ux, scale, lim1_add, slack1, sib, c, kd,
                       ki, kc, lim1, n_ex, js, seen)
        if first and lim1[b] < np.inf:
            # the tile's candidates under the threshold just set
            lim = lim1[b]
            t32 = _f32_up(lim)
            for u in range(nsb):
                if _count_le(g, u, L, t32) == 0:
                    continue
                for j in range(u * _SUB, min(L, (u + 1) * _SUB)):
                    if np.float64(g[j]) <= lim:
                        if nc < cap:
                            cand_k[b, nc] = g[j]
                            cand_j[b, nc] = perm[j0 + j]
                        nc += 1
        n_cand[b] = nc


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sq_l2_part(a, b, start, stop):
    """Squared distance over coordinates [start, stop) of two float32
    vectors, accumulated in float64. Only bounds use it, and the rounding
    bound of a sum holds in any order, so LLVM may reassociate it (SIMD
    lanes) and contract it (FMA): ``fastmath`` with those two flags only."""
    s = 0.0
    for t in range(start, stop):
        d = np.float64(a[t]) - np.float64(b[t])
        s += d * d
    return s


@njit(cache=True, nogil=True)
def _argsort_heap(keys, n, order):
    """``order[:n]`` = the positions of ``keys[:n]`` in increasing key order
    (a heap sort: only the order in which stage 3 measures depends on it,
    never an answer; numba's ``np.argsort`` costs ~1 s of compile time)."""
    for t in range(n):
        order[t] = t
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(keys, order, start, n)
    for end in range(n - 1, 0, -1):
        top = order[0]
        order[0] = order[end]
        order[end] = top
        _sift_down(keys, order, 0, end)


@njit(cache=True, nogil=True, inline="always")
def _sift_down(keys, order, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and keys[order[child + 1]] > keys[order[child]]:
            child += 1
        if keys[order[child]] > keys[order[root]]:
            top = order[root]
            order[root] = order[child]
            order[child] = top
            root = child
        else:
            return


@njit(cache=True, nogil=True)
def pruned_block(Q, X, is_int, ux, q0, nb, si, sc, kd_b, ki_b, kc, n_ex, cand_k, cand_j,
                 n_cand, W1, m1, Wq, rq1, Fq, aux, bf16, Zq2, Z2, rq, h, s_add, s_slack, e1_add,
                 slack1, pad2, scale, k, kd_out, ki_out, n_exact, kd, ki, cb_k, cb_d, cb_i, cb_o,
                 seen):
    """Exact k-NN of the queries ``q0 .. q0 + nb`` after stage 1
    (``scan_collect``/``scan_sparse`` over all tiles): a cascade of proven
    lower bounds.

    Stage 1 gave, per query, the keys under its running threshold
    (``cand_k``/``cand_j``), ``key ~ |w1(q) - w1(x)|^2`` within ``s_slack``
    for vectors within ``s_add`` of the exact ``w1`` (the first ``m1``
    projected coordinates plus the residual norm beyond them: the float32
    ``W1``/``Wq``, or these rounded to bfloat16 when ``bf16``; ``rq1``/``rx1``
    hold the key vectors' residual coordinate), its seeds (``si``/``sc``;
    the first k already measured) and the exact top-k so far
    (``kd_b``/``ki_b``). A query whose list overflowed gets all its keys
    recomputed from ``W1`` in float64 (vectors within ``e1_add``;
    ``slack1``, the float32 key margin, covers far more than that sum's
    rounding). Stage 2 (the points whose key reaches the threshold) takes
    the key minus its residual term and extends it with the coordinates
    ``m1 ..`` (``Z2``): first ``h`` more coordinates and the residual norm
    ``r[:, 0]`` beyond them, then all of them with ``r[:, 1]`` (most points
    stop after the first step); its vectors lie within ``pad2`` of the exact
    ones, plus ``s_add`` for bfloat16 keys. Stage 3: exact distances in
    increasing order of the stage-2 bound, until the bound passes the k-th
    exact distance (points measured before, as seeds, are skipped: ``seen``
    holds a bit per row and query of the block, set when the row is
    measured).

    Every comparison carries a proven floating-point margin: a point is
    skipped only when its true distance is strictly above the threshold,
    so the answer is the exact top-k by (distance, index). Stage 1 skips
    ``j`` when ``key > (scale * sqrt(thr) + s_add[i])**2 + s_slack[i]``;
    stage 2 when ``lb2 > (scale * sqrt(thr) + pad2[i, s] (+ s_add[i]))**2
    + slack1[i] (+ s_slack[i])`` (``s`` = 0, 1 for the two steps).
    ``scale`` is the power of two the projected data were multiplied by
    (keeps float32 values near 1: no overflow, no underflow); exact
    distances ``thr`` are unscaled.
    """
    n = X.shape[0]
    m2 = Z2.shape[1]
    cap = cand_k.shape[1]
    for b in range(nb):
        i = q0 + b
        c = kc[b]
        for t in range(c):
            kd[t] = kd_b[b, t]
            ki[t] = ki_b[b, t]
        cnt = n_ex[b]
        m = 0
        for t in range(k, sc[b]):       # the seeds not measured yet
            j = si[b, t]
            if not _seen(seen, j, b):
                cb_i[m] = j
                _mark(seen, j, b)
                m += 1
        c = _insert_exact(Q, i, X, cb_i, np.int64(m), is_int, ux, kd, ki, np.int64(c))
        cnt += m
        thr = kd[k - 1]
        wq = Wq[i]
        # ---- the points the first bound cannot exclude, with their keys
        nc = 0
        if n_cand[b] <= cap:
            lim1 = _lim(thr, scale, s_add[i], s_slack[i])
            for t in range(n_cand[b]):
                if cand_k[b, t] <= lim1:
                    cb_i[nc] = cand_j[b, t]
                    cb_k[nc] = cand_k[b, t]
                    nc += 1
            over = False
        else:
            # the list overflowed: all keys again, float64 sums from W1
            lim1 = _lim(thr, scale, e1_add[i], slack1[i])
            for j in range(n):
                key = _sq_l2_part(wq, W1[j], 0, m1 + 1)
                if key <= lim1:
                    cb_i[nc] = j
                    cb_k[nc] = key
                    nc += 1
            over = True
        # the keys' vectors: bfloat16 ones from the AMX products (within
        # Fq of the query's exact vector, aux[j, 3] of the point's), float32
        # ones otherwise (their error is in pad2); residual coordinate rq1 /
        # aux[j, 2] (W1's for recomputed keys)
        if bf16 and not over:
            fq = Fq[i]
            f_x = 1.0
            sl = s_slack[i] + slack1[i]
            rqk = rq1[i]
        else:
            fq = 0.0
            f_x = 0.0
            sl = slack1[i]
            rqk = np.float64(wq[m1])
        # ---- stage 2: the key minus its residual term (the first m1
        # coordinates), plus coordinates m1 .. of Z2 and the new residual;
        # each point's bound as a proven lower bound of its distance
        zq = Zq2[i]
        st = _sqrt_up(thr)
        nk = 0
        for t in range(min(nc, _PF)):
            _prefetch_row(Z2, cb_i[t])
            _prefetch_row(aux, cb_i[t])
        for t in range(nc):
            if t + _PF < nc:
                _prefetch_row(Z2, cb_i[t + _PF])
                _prefetch_row(aux, cb_i[t + _PF])
            j = cb_i[t]
            zx = Z2[j]
            ax = aux[j]
            d1 = rqk - (np.float64(W1[j, m1]) if over else ax[2])
            f = fq + f_x * ax[3]
            part = (cb_k[t] - d1 * d1) + _sq_l2_part(zq, zx, 0, h)
            dr = rq[i, 0] - ax[0]
            lb = _lb_dist(part + dr * dr, sl, pad2[i, 0] + f, scale)
            if lb > st:
                continue
            if h < m2:
                part += _sq_l2_part(zq, zx, h, m2)
                dr = rq[i, 1] - ax[1]
                lb = _lb_dist(part + dr * dr, sl, pad2[i, 1] + f, scale)
                if lb > st:
                    continue
            cb_d[nk] = lb
            cb_i[nk] = j
            nk += 1
        # ---- stage 3: exact distances in increasing bound order
        order = cb_o[:nk]
        _argsort_heap(cb_d, nk, order)
        for t in range(min(nk, _PF3)):
            _prefetch_row(X, cb_i[order[t]])
        for t in range(nk):
            u = order[t]
            if cb_d[u] > st:
                break
            if t + _PF3 < nk:
                _prefetch_row(X, cb_i[order[t + _PF3]])
            j = cb_i[u]
            if _seen(seen, j, b):
                continue        # measured as a seed: listed, or beyond the list
            _mark(seen, j, b)
            c = topk_insert(kd, ki, c, _exact(Q, i, X, j, is_int, ux), j)
            cnt += 1
            if kd[k - 1] < thr:
                thr = kd[k - 1]
                st = _sqrt_up(thr)
        n_exact[i] = cnt
        for t in range(k):
            kd_out[i, t] = kd[t]
            ki_out[i, t] = ki[t]


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


@njit(cache=True, nogil=True)
def _residual(zz2, c2, e_z, c2_err):
    """Residual norm ``sqrt(c2 - zz2)`` beyond a cut and the error bound of
    the stored vector (projected coordinates + residual) up to that cut."""
    rr = math.sqrt(max(c2 - zz2, 0.0))
    delta_sq = e_z * (2.0 * math.sqrt(zz2) + e_z) + c2_err
    e_r = math.sqrt(delta_sq)
    if rr > 0.0:
        e_r = min(e_r, delta_sq / rr)
    # the stored float32 coordinates add at most u32 * |w|
    f32 = 1.01 * 2.0 ** -24 * math.sqrt(max(c2, zz2))
    return rr, e_z + e_r + 2.0 * 2.0 ** -53 * rr + f32


@njit(cache=True, nogil=True)
def finish_projection(Zt, c2, scale, exact, d, delta, m1, mh, W1, Z2, r, E, E1, a1, nx1):
    """Per row of a projected tile ``Zt`` (``(a - c) * scale`` times the
    directions, float64) and its unscaled ``|a - c|^2`` (``c2``): the stored
    float32 vectors and their proven error bounds, in scaled units.

    Per coordinate the projection error is at most
    ``(d + 3) u (1 + delta) |v|`` (GEMM of d terms, rounding of ``v``), so the
    vector's is ``sqrt(m)`` times that, plus ``m delta |v|`` for the
    departure of the directions from orthonormality; ``|v|^2`` is exact for
    integers, else within ``(d + 4) u |v|^2``. ``_residual`` turns these into
    bounds for the residual norms beyond ``m1``, ``mh`` and ``m`` and for the
    stored vectors; a 1e-37 absolute term covers subnormal float32 values.

    Writes ``W1`` (first ``m1`` coordinates + residual norm beyond them),
    ``Z2`` (coordinates ``m1 ..``), ``r``/``E`` (residual norms and bounds
    at ``mh`` and ``m``), ``E1`` (bound of ``W1``), ``a1 = |W1|`` and
    ``nx1 = float32(a1**2)``.
    """
    rows, m = Zt.shape
    u64 = 2.0 ** -53
    kz = math.sqrt(m) * (d + 3) * u64 * 1.01 * (1.0 + delta) + m * delta
    tiny = 1e-37 * math.sqrt(m + 1) * (d + 1)
    for i in range(rows):
        z = Zt[i]
        c2s = c2[i] * scale * scale
        cn = math.sqrt(c2[i]) * scale
        s1 = 0.0
        for t in range(m1):
            s1 += z[t] * z[t]
        sh = s1
        for t in range(m1, mh):
            sh += z[t] * z[t]
        sm = sh
        for t in range(mh, m):
            sm += z[t] * z[t]
        e_z = kz * cn + 4.0 * u64 * math.sqrt(sm)
        c2_err = 4.0 * m * delta * c2s
        if not exact:
            c2_err += (d + 4) * u64 * 1.01 * c2s
        rr, ee = _residual(s1, c2s, e_z, c2_err)
        E1[i] = ee + tiny
        acc = 0.0
        for t in range(m1):
            w = np.float32(z[t])
            W1[i, t] = w
            acc += np.float64(w) * np.float64(w)
        w = np.float32(rr)
        W1[i, m1] = w
        acc += np.float64(w) * np.float64(w)
        a1[i] = math.sqrt(acc)
        nx1[i] = np.float32(acc)
        for t in range(m1, m):
            Z2[i, t - m1] = np.float32(z[t])
        rr, ee = _residual(sh, c2s, e_z, c2_err)
        r[i, 0] = rr
        E[i, 0] = ee + tiny
        rr, ee = _residual(sm, c2s, e_z, c2_err)
        r[i, 1] = rr
        E[i, 1] = ee + tiny


# --------------------------------------------------------------------------
# Stage-1 rows for the AMX bfloat16 product (see neighbors._search_pruned)
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _bf16_round(v):
    """``v`` (float64) rounded to bfloat16 (8 significant bits, nearest,
    ties to even; results below 2**-126 flushed to zero, as the tiles read
    them): ``(bits, value)``. The same rounding as ``amx.bf16_bits`` for
    float32 inputs. ``|v|`` must stay below 2**127."""
    if v == 0.0:
        return np.uint16(0), 0.0
    m, ex = math.frexp(abs(v))            # |v| = m 2**ex, 0.5 <= m < 1
    r = np.rint(m * 256.0)                # 128 .. 256, ties to even
    if r == 256.0:
        r = 128.0
        ex += 1
    e_b = ex - 1 + 127                    # value = (r / 128) 2**(ex - 1)
    if e_b <= 0:
        return np.uint16(0), 0.0
    val = math.ldexp(r, ex - 8)
    bits = (e_b << 7) | (np.int64(r) - 128)
    if v < 0.0:
        bits |= 0x8000
        val = -val
    return np.uint16(bits), val


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _norm_and_gap(w, h, mp):
    """``(sum h^2, sum (w - h)^2)`` over the first ``mp`` values, in float64.
    Only bounds use them (a bound on a sum's rounding holds in any order),
    so LLVM may reassociate them into SIMD lanes: ``fastmath`` with those
    two flags only."""
    nrm = 0.0
    dd = 0.0
    for t in range(mp):
        x = np.float64(h[t])
        d = np.float64(w[t]) - x
        nrm += x * x
        dd += d * d
    return nrm, dd


@njit(cache=True, nogil=True, inline="always")
def _stage1_row(w, wb, e1, index_side, row, hb):
    """One stage-1 row (see ``stage1_rows_index``) into ``row`` (uint16,
    K) from the float32 vector ``w`` and its bits ``wb``; returns
    ``(F, |h|)``. The rounding of ``amx.bf16_bits`` on the bits (nearest,
    ties to even, subnormal results flushed); the rounded values ``h`` as
    float32 bits in the scratch ``hb`` (uint32, >= len(w)): a bfloat16 is
    the top half of its float32."""
    mp = w.shape[0]
    K = row.shape[0]
    for t in range(mp):
        u = np.uint32(wb[t])
        b = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        ex = (b >> np.uint32(7)) & np.uint32(0xFF)
        if ex == 0:
            b = np.uint32(0)
        hb[t] = b << np.uint32(16)
        if index_side:
            row[t] = np.uint16(b)
        elif ex == 0:
            row[t] = 0
        else:
            # -2 h: the sign flipped, the exponent one up (|h| < 2**126)
            row[t] = np.uint16((b ^ np.uint32(0x8000)) + np.uint32(0x80))
    nrm, dd = _norm_and_gap(w, hb[:mp].view(np.float32), mp)
    rest = nrm
    for t in range(3):
        b16, h = _bf16_round(rest)
        rest -= h
        row[mp + t + (3 if index_side else 0)] = b16
        row[mp + t + (0 if index_side else 3)] = 0x3F80          # 1.0
    for t in range(mp + 6, K):
        row[t] = 0
    return e1 + math.sqrt(dd) * (1.0 + 1e-12), math.sqrt(nrm)


@njit(cache=True, nogil=True)
def stage1_rows_index(W, Wb, E1, perm, p0, p1, row, Bp, F, a16):
    """Positions ``p0 .. p1`` of the stage-1 operand, written straight into
    the AMX layout ``Bp`` (``(n_pad / 16, K / 2, 16, 2)``, see
    ``amx.pack_b``), position ``p`` holding index row ``perm[p]``: its
    first-stage vector ``W`` rounded to bfloat16 (``h``), three ones, and
    the float64 ``|h|^2`` in three bfloat16 pieces (within
    ``2**-22 |h|^2``). Per row: ``F = E1 + |W - h|`` (the rounded vector's
    distance to the exact one), ``a16 = |h|``. ``Wb``: the bits of ``W``
    (``W.view(np.uint32)``); ``row``: scratch (K,). Going in position
    order, each 16-column group of ``Bp`` is written whole (its cache lines
    once); only the rows ``W[perm[p]]`` are gathered."""
    K = row.shape[0]
    hb = np.empty(K, np.uint32)
    for p in range(p0, min(p1, p0 + _PF)):
        _prefetch_row(W, perm[p])
    for p in range(p0, p1):
        if p + _PF < p1:
            _prefetch_row(W, perm[p + _PF])     # (rows in cluster order: random)
        j = perm[p]
        F[j], a16[j] = _stage1_row(W[j], Wb[j], E1[j], True, row, hb)
        g = p // 16
        c = p - 16 * g
        for t in range(K // 2):
            Bp[g, t, c, 0] = row[2 * t]
            Bp[g, t, c, 1] = row[2 * t + 1]


@njit(cache=True, nogil=True)
def stage1_rows_query(W, Wb, E1, A, F, a16):
    """Query rows of the stage-1 operand (row-major ``A``): ``-2 h``, the
    three norm pieces and three ones; ``F``, ``a16`` as for the index."""
    hb = np.empty(A.shape[1], np.uint32)
    for i in range(W.shape[0]):
        F[i], a16[i] = _stage1_row(W[i], Wb[i], E1[i], False, A[i], hb)


@njit(cache=True, nogil=True)
def combine_digits(C, Cc, w, scale, Z):
    """Projected coordinates from the exact integer products of a uint8
    tile with the int8 digits of the directions (``amx.gemm_u8s8``):
    ``Z[i, j] = scale * sum_t w[t] (C[i, t m + j] - Cc[t m + j])``, ``Cc``
    the centre's products, ``m = Z.shape[1]``. Each term is exact (an
    integer times a power of two); the sum over the ``D`` digits, largest
    first, rounds at most ``D - 1`` times."""
    D = w.shape[0]
    m = Z.shape[1]
    for i in range(Z.shape[0]):
        for j in range(m):
            s = 0.0
            for t in range(D):
                s += w[t] * np.float64(np.int64(C[i, t * m + j]) - Cc[t * m + j])
            Z[i, j] = s * scale
