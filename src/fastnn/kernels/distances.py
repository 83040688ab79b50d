"""Numba kernels for exact (squared) Euclidean nearest-neighbour search.

One exact distance defines every answer: integers in int64 (exact), floats
as a float64 sum of squared differences in index order. Every backend only
produces candidate sets that provably contain the true neighbours under that
distance; the final order is by (distance, index), so answers never depend
on the backend, the thread count or the chunk size.

Sorted top-k lists are kept as two arrays (distance, index), ascending by
(key, index). For farthest-neighbour search the key is the negated distance.
"""

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def sqdist_int(a, b):
    s = np.int64(0)
    for t in range(a.shape[0]):
        d = np.int64(a[t]) - np.int64(b[t])
        s += d * d
    return np.float64(s)


@njit(cache=True, nogil=True)
def sqdist_float(a, b):
    s = 0.0
    for t in range(a.shape[0]):
        d = np.float64(a[t]) - np.float64(b[t])
        s += d * d
    return s


@njit(cache=True, nogil=True)
def sqdist_int32(a, b):
    # byte data: |a - b|^2 summed in int32 is exact while d * 255**2 < 2**31
    s = np.int32(0)
    for t in range(a.shape[0]):
        d = np.int32(a[t]) - np.int32(b[t])
        s += d * d
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


merge_tile_parallel = njit(cache=True, parallel=True, nogil=True)(_merge_tile_py)
merge_tile_serial = njit(cache=True, nogil=True)(_merge_tile_py)


def _exact_scan_py(Q, X, rows, sign, is_int, kd_out, ki_out):
    """Full exact scan for the query rows ``rows`` (fallback and reference)."""
    k = kd_out.shape[1]
    for r in prange(rows.shape[0]):
        i = rows[r]
        kd = np.empty(k, np.float64)
        ki = np.empty(k, np.int64)
        c = 0
        for j in range(X.shape[0]):
            c = topk_insert(kd, ki, c, sign * sqdist(Q[i], X[j], is_int), j)
        for t in range(k):
            kd_out[i, t] = sign * kd[t]
            ki_out[i, t] = ki[t]


exact_scan_parallel = njit(cache=True, parallel=True, nogil=True)(_exact_scan_py)
exact_scan_serial = njit(cache=True, nogil=True)(_exact_scan_py)


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
        c = 0
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


rerank_parallel = njit(cache=True, parallel=True, nogil=True)(_rerank_py)
rerank_serial = njit(cache=True, nogil=True)(_rerank_py)


# --------------------------------------------------------------------------
# Pruned exact search with projection lower bounds
#   |q - x| >= |w(q) - w(x)|,  w(v) = (P(v - mu), |residual of v - mu|)
# --------------------------------------------------------------------------
_QBLOCK = 8        # queries sharing one pass over the first-stage index
_JBLOCK = 1024     # index points per first-stage tile (accumulators stay in L1)
_SUB = 64          # keys per vectorised pre-test in the scalar scans


@njit(cache=True, nogil=True)
def _f32_above(x):
    """The smallest float32 >= x (so ``key < x`` implies ``key < result``)."""
    f = np.float32(x)
    if np.float64(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return f


@njit(cache=True, nogil=True)
def _count_below(keys, start, stop, lim):
    """How many ``keys[start:stop] < lim`` (a vectorisable count)."""
    cnt = 0
    for j in range(start, stop):
        cnt += keys[j] < lim
    return cnt


def _pruned_py(Q, X, is_int, acc32, Wq, W1T, nx1, lim1_add, lim1_pad, Zq, Z, rq, r, mh,
               pad2, scale, k, n_seed, kd_out, ki_out, n_exact):
    """Exact k-NN of the queries ``Q`` among ``X`` with a cascade of bounds.

    Stage 1 (all points, float32): ``key[j] = |w1(x_j)|^2 - 2 w1(q).w1(x_j)``
    with ``w1`` the first projected coordinates plus the matching residual
    norm, so ``|w1(q)|^2 + key`` is the squared first-stage bound. The
    ``n_seed`` smallest keys give a first exact threshold. Stage 2 (the
    points whose first bound reaches it, float64): the bound over all
    projected coordinates. Stage 3: exact distances in increasing order of
    the stage-2 bound, until the bound passes the k-th exact distance.
    Stage 2 reads the float32 projections ``Z`` in two steps: coordinates
    ``[0, mh)`` with the residual norm ``r[:, 0]`` beyond them, then all
    ``m`` with ``r[:, 1]`` (most points stop after the first step).

    Every comparison carries a proven floating-point margin: a point is
    skipped only when its true distance is strictly above the threshold,
    so the answer is the exact top-k by (distance, index).

    ``lim1_add[i]``/``lim1_pad[i]``: stage 1 skips ``j`` when
    ``key > (scale * sqrt(thr) + lim1_add[i])**2 + lim1_pad[i]``; stage 2
    skips when ``lb2 > (scale * sqrt(thr) + pad2[i, s])**2`` (``s`` = 0, 1 for
    the two steps; all margins precomputed). ``scale`` is the power of two
    the projected data were multiplied by (keeps float32 values near 1: no
    overflow, no underflow); exact distances ``thr`` are unscaled.
    """
    nq = Q.shape[0]
    n = X.shape[0]
    n_blocks = (nq + _QBLOCK - 1) // _QBLOCK
    n_parts = min(n_blocks, 64)
    for part in prange(n_parts):
        # per-part buffers (fresh arrays per block would cost page faults)
        keys = np.empty((_QBLOCK, n), np.float32)
        sd = np.empty((_QBLOCK, n_seed), np.float64)
        si = np.empty((_QBLOCK, n_seed), np.int64)
        sc = np.zeros(_QBLOCK, np.int64)
        kd = np.empty(k, np.float64)
        ki = np.empty(k, np.int64)
        cb_d = np.empty(n, np.float64)
        cb_i = np.empty(n, np.int64)
        for blk in range(part * n_blocks // n_parts, (part + 1) * n_blocks // n_parts):
            q0 = blk * _QBLOCK
            nb = min(nq, q0 + _QBLOCK) - q0
            _first_stage(Wq, q0, nb, W1T, nx1, keys, sd, si, sc)
            _pruned_block(Q, X, is_int, acc32, q0, nb, keys, sd, si, sc, Zq, Z, rq, r, mh,
                          lim1_add, lim1_pad, pad2, scale, k, kd_out, ki_out, n_exact,
                          kd, ki, cb_d, cb_i)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _first_stage(Wq, q0, nb, W1T, nx1, keys, sd, si, sc):
    """Keys ``|w1(x)|^2 - 2 w1(q).w1(x)`` of ``nb`` queries against all points
    and the ``n_seed`` smallest keys of each query.

    Register-blocked product: tiles of points, four queries times four
    coordinates per sweep (loads and stores of the accumulators dominate
    otherwise). Only contraction to FMA is allowed (``fastmath={"contract"}``):
    the order of operations is fixed, so results are deterministic, and an
    FMA rounds less than a multiply and an add, inside the same error bound.
    """
    n = W1T.shape[1]
    m1p = W1T.shape[0]
    n_seed = sd.shape[1]
    for b in range(nb):
        sc[b] = 0
    for j0 in range(0, n, _JBLOCK):
        L = min(n, j0 + _JBLOCK) - j0
        for b in range(nb):
            kb = keys[b, j0:j0 + L]
            for j in range(L):
                kb[j] = 0.0
        t = 0
        while t + 4 <= m1p:
            r0 = W1T[t, j0:j0 + L]
            r1 = W1T[t + 1, j0:j0 + L]
            r2 = W1T[t + 2, j0:j0 + L]
            r3 = W1T[t + 3, j0:j0 + L]
            b = 0
            while b + 4 <= nb:
                ka = keys[b, j0:j0 + L]
                kc = keys[b + 1, j0:j0 + L]
                ke = keys[b + 2, j0:j0 + L]
                kg = keys[b + 3, j0:j0 + L]
                a0 = Wq[q0 + b, t]
                a1 = Wq[q0 + b, t + 1]
                a2 = Wq[q0 + b, t + 2]
                a3 = Wq[q0 + b, t + 3]
                c0 = Wq[q0 + b + 1, t]
                c1 = Wq[q0 + b + 1, t + 1]
                c2 = Wq[q0 + b + 1, t + 2]
                c3 = Wq[q0 + b + 1, t + 3]
                e0 = Wq[q0 + b + 2, t]
                e1 = Wq[q0 + b + 2, t + 1]
                e2 = Wq[q0 + b + 2, t + 2]
                e3 = Wq[q0 + b + 2, t + 3]
                g0 = Wq[q0 + b + 3, t]
                g1 = Wq[q0 + b + 3, t + 1]
                g2 = Wq[q0 + b + 3, t + 2]
                g3 = Wq[q0 + b + 3, t + 3]
                for j in range(L):
                    x0 = r0[j]
                    x1 = r1[j]
                    x2 = r2[j]
                    x3 = r3[j]
                    ka[j] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3)
                    kc[j] += (c0 * x0 + c1 * x1) + (c2 * x2 + c3 * x3)
                    ke[j] += (e0 * x0 + e1 * x1) + (e2 * x2 + e3 * x3)
                    kg[j] += (g0 * x0 + g1 * x1) + (g2 * x2 + g3 * x3)
                b += 4
            while b < nb:
                ka = keys[b, j0:j0 + L]
                a0 = Wq[q0 + b, t]
                a1 = Wq[q0 + b, t + 1]
                a2 = Wq[q0 + b, t + 2]
                a3 = Wq[q0 + b, t + 3]
                for j in range(L):
                    ka[j] += (a0 * r0[j] + a1 * r1[j]) + (a2 * r2[j] + a3 * r3[j])
                b += 1
            t += 4
        while t < m1p:
            r0 = W1T[t, j0:j0 + L]
            for b in range(nb):
                a0 = Wq[q0 + b, t]
                ka = keys[b, j0:j0 + L]
                for j in range(L):
                    ka[j] += a0 * r0[j]
            t += 1
        nxb = nx1[j0:j0 + L]
        for b in range(nb):
            kb = keys[b, j0:j0 + L]
            for j in range(L):
                kb[j] = nxb[j] - 2.0 * kb[j]
            c = sc[b]
            sdb = sd[b]
            lim = sdb[n_seed - 1] if c == n_seed else np.inf
            for u0 in range(0, L, _SUB):
                u1 = min(L, u0 + _SUB)
                if c == n_seed and _count_below(kb, u0, u1, _f32_above(lim)) == 0:
                    continue          # vectorised test: nothing here beats the seeds
                for j in range(u0, u1):
                    if kb[j] < lim or c < n_seed:
                        c = topk_insert(sdb, si[b], c, np.float64(kb[j]), j0 + j)
                        if c == n_seed:
                            lim = sdb[n_seed - 1]
            sc[b] = c


@njit(cache=True, nogil=True)
def _sq_l2_part(a, b, start, stop):
    """Squared distance over coordinates [start, stop) of two float32
    vectors, accumulated in float64 with four independent partial sums (the
    sequential sum is latency-bound); any order obeys the same rounding bound."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    t = start
    while t + 4 <= stop:
        d0 = np.float64(a[t]) - np.float64(b[t])
        d1 = np.float64(a[t + 1]) - np.float64(b[t + 1])
        d2 = np.float64(a[t + 2]) - np.float64(b[t + 2])
        d3 = np.float64(a[t + 3]) - np.float64(b[t + 3])
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        t += 4
    while t < stop:
        d0 = np.float64(a[t]) - np.float64(b[t])
        s0 += d0 * d0
        t += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _pruned_block(Q, X, is_int, acc32, q0, nb, keys, sd, si, sc, Zq, Z, rq, r, mh,
                  lim1_add, lim1_pad, pad2, scale, k, kd_out, ki_out, n_exact,
                  kd, ki, cb_d, cb_i):
    n = X.shape[0]
    m = Z.shape[1]
    for b in range(nb):
        i = q0 + b
        kb = keys[b]
        zq = Zq[i]
        # ---- seeds: exact distances of the smallest first-stage keys
        c = 0
        for t in range(sc[b]):
            j = si[b, t]
            c = topk_insert(kd, ki, c, sqdist(Q[i], X[j], is_int, acc32), j)
        cnt = sc[b]
        thr = kd[k - 1]
        st = math.sqrt(thr) * scale + lim1_add[i]
        lim1 = st * st * (1.0 + 1e-12) + lim1_pad[i]
        sm = math.sqrt(thr) * scale + pad2[i, 0]
        limm = sm * sm * (1.0 + 1e-12)
        s2 = math.sqrt(thr) * scale + pad2[i, 1]
        lim2 = s2 * s2 * (1.0 + 1e-12)
        # ---- stage 2 on the points the first bound cannot exclude
        nc = 0
        # float32 keys: key <= lim1  <=>  key < up, with up the float32 just
        # above the largest float32 <= lim1 (so the pre-test is exact)
        f = np.float32(lim1)
        if np.float64(f) > lim1:
            f = np.nextafter(f, np.float32(-np.inf))
        up = np.nextafter(f, np.float32(np.inf))
        for u0 in range(0, n, _SUB):
            u1 = min(n, u0 + _SUB)
            if _count_below(kb, u0, u1, up) == 0:
                continue                  # vectorised test: the whole sub-block is out
            for j in range(u0, u1):
                if kb[j] > lim1:
                    continue
                seed = False
                for t in range(sc[b]):
                    if si[b, t] == j:
                        seed = True
                        break
                if seed:
                    continue
                zx = Z[j]
                part = _sq_l2_part(zq, zx, 0, mh)
                dr = rq[i, 0] - r[j, 0]
                acc = part + dr * dr
                if acc > limm:
                    continue
                if mh < m:
                    part += _sq_l2_part(zq, zx, mh, m)
                    dr = rq[i, 1] - r[j, 1]
                    acc = part + dr * dr
                    if acc > lim2:
                        continue
                cb_d[nc] = acc
                cb_i[nc] = j
                nc += 1
        # ---- stage 3: exact distances in increasing bound order
        order = np.argsort(cb_d[:nc])
        for t in range(nc):
            u = order[t]
            if cb_d[u] > lim2:
                break
            j = cb_i[u]
            c = topk_insert(kd, ki, c, sqdist(Q[i], X[j], is_int, acc32), j)
            cnt += 1
            if kd[k - 1] < thr:
                thr = kd[k - 1]
                s2 = math.sqrt(thr) * scale + pad2[i, 1]
                lim2 = s2 * s2 * (1.0 + 1e-12)
        n_exact[i] = cnt
        for t in range(k):
            kd_out[i, t] = kd[t]
            ki_out[i, t] = ki[t]


pruned_parallel = njit(cache=True, parallel=True, nogil=True)(_pruned_py)
pruned_serial = njit(cache=True, nogil=True)(_pruned_py)


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


finish_pairwise_parallel = njit(cache=True, parallel=True, nogil=True)(_finish_pairwise_py)
finish_pairwise_serial = njit(cache=True, nogil=True)(_finish_pairwise_py)


def _row_sqnorms_py(X, is_int, out):
    for j in prange(X.shape[0]):
        if is_int:
            s = np.int64(0)
            for t in range(X.shape[1]):
                v = np.int64(X[j, t])
                s += v * v
            out[j] = np.float64(s)
        else:
            s = 0.0
            for t in range(X.shape[1]):
                v = np.float64(X[j, t])
                s += v * v
            out[j] = s


row_sqnorms_parallel = njit(cache=True, parallel=True, nogil=True)(_row_sqnorms_py)
row_sqnorms_serial = njit(cache=True, nogil=True)(_row_sqnorms_py)
