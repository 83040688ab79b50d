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
def sqdist(a, b, is_int):
    if is_int:
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
#   |q - x|^2 >= |P(q - x)|^2 + (|r_q| - |r_x|)^2
# --------------------------------------------------------------------------
def _pruned_py(Q, X, is_int, G1, bq, ax, Zq, Z, rq, r, qn, xn, k, kd_out, ki_out, n_exact):
    """Exact k-NN of the queries ``Q`` among ``X`` with projection pruning.

    First stage: ``lb1[j] = bq[i] + ax[j] - 2 * G1[i, j]`` is a safe lower
    bound of the squared distance (the residual norm is an extra projected
    coordinate, and the float32 GEMM error is already subtracted through
    ``bq``/``ax``). The k smallest bounds seed the threshold with exact
    distances; every other candidate whose bound reaches the threshold goes
    through the full-dimension bound and, if it survives, the exact distance.
    """
    nq = G1.shape[0]
    n = X.shape[0]
    m = Z.shape[1]
    n_parts = min(nq, 64)
    for part in prange(n_parts):
        # per-part buffers: a fresh (n,) array per query costs page faults
        kd = np.empty(k, np.float64)
        ki = np.empty(k, np.int64)
        sd = np.empty(k, np.float64)
        si = np.empty(k, np.int64)
        lb = np.empty(n, np.float64)
        for i in range(part * nq // n_parts, (part + 1) * nq // n_parts):
            _pruned_one(i, Q, X, is_int, G1, bq, ax, Zq, Z, rq, r, qn, xn, k,
                        kd_out, ki_out, n_exact, kd, ki, sd, si, lb)


@njit(cache=True, nogil=True)
def _pruned_one(i, Q, X, is_int, G1, bq, ax, Zq, Z, rq, r, qn, xn, k,
                kd_out, ki_out, n_exact, kd, ki, sd, si, lb):
    n = X.shape[0]
    m = Z.shape[1]
    g = G1[i]
    b = bq[i]
    for j in range(n):
        lb[j] = b + ax[j] - 2.0 * np.float64(g[j])
    sc = 0
    for j in range(n):
        if sc < k or lb[j] < sd[k - 1]:
            sc = topk_insert(sd, si, sc, lb[j], j)
    c = 0
    cnt = 0
    for t in range(sc):
        j = si[t]
        c = topk_insert(kd, ki, c, sqdist(Q[i], X[j], is_int), j)
        cnt += 1
        lb[j] = np.inf          # done: never visit again
    thr = kd[k - 1]
    for j in range(n):
        if lb[j] > thr:
            continue
        s2 = 0.0
        for t in range(m):
            dz = Zq[i, t] - Z[j, t]
            s2 += dz * dz
        dr = rq[i] - r[j]
        lb2 = (s2 + dr * dr) * (1.0 - 1e-9) - 1e-9 * (qn[i] + xn[j])
        if lb2 > thr:
            continue
        d = sqdist(Q[i], X[j], is_int)
        cnt += 1
        c = topk_insert(kd, ki, c, d, j)
        thr = kd[k - 1]
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
