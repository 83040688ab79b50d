"""Kernels of the exact inner-product (maximum inner product) search: the
exact product, a top-k merge of GEMM tiles by product, the exact re-rank of
the candidates with its proof, and a full exact scan for the queries the
proof does not cover. Keys are ``sign * product`` in ascending lists
(``sign`` -1: the largest products first), ties to the lower row."""

import numpy as np
from numba import njit

from .distances import topk_insert


@njit(cache=True, nogil=True)
def dot_exact(a, b, is_int):
    """The exact inner product: an int64 sum for integer rows, else a
    float64 sum of float64 products in index order (one fixed order: the
    same bits in every path)."""
    if is_int:
        s = np.int64(0)
        for t in range(a.shape[0]):
            s += np.int64(a[t]) * np.int64(b[t])
        return np.float64(s)
    f = 0.0
    for t in range(a.shape[0]):
        f += np.float64(a[t]) * np.float64(b[t])
    return f


@njit(cache=True, nogil=True)
def merge_products(G, q0, q1, j0, sign, kd, ki, counts):
    """Rows ``q0 .. q1`` of the product tile ``G`` (columns ``j0 ..``) merged
    into the running top lists by key ``sign * G``."""
    kk = kd.shape[1]
    for i in range(q0, q1):
        c = counts[i]
        g = G[i]
        kdi = kd[i]
        kii = ki[i]
        # (a plain compare with the current worst key skips nearly every
        # product; the insert keeps ties by row)
        worst = kdi[kk - 1] if c == kk else np.inf
        for t in range(g.shape[0]):
            key = sign * np.float64(g[t])
            if key <= worst:
                c = topk_insert(kdi, kii, c, key, j0 + t)
                if c == kk:
                    worst = kdi[kk - 1]
        counts[i] = c


@njit(cache=True, nogil=True)
def rerank_products(Q, X, q0, q1, cand_d, cand_i, counts, sign, is_int, err, k, kd_out,
                    ki_out, need_full):
    """Exact products of each query's candidates (the best ``kk`` by GEMM key,
    each key within ``err[i]`` of the exact one), the final top-k; a query
    whose best left-out key could still reach its k-th exact key is flagged
    for a full scan (``need_full``)."""
    n = X.shape[0]
    kk = cand_i.shape[1]
    kd = np.empty(k, np.float64)
    ki = np.empty(k, np.int64)
    for i in range(q0, q1):
        c = np.int64(0)
        for t in range(counts[i]):
            j = cand_i[i, t]
            c = topk_insert(kd, ki, c, sign * dot_exact(Q[i], X[j], is_int), j)
        need_full[i] = kk < n and not (cand_d[i, kk - 1] - 2.0 * err[i] > kd[k - 1])
        for t in range(k):
            kd_out[i, t] = kd[t]
            ki_out[i, t] = ki[t]


@njit(cache=True, nogil=True)
def scan_products(Q, X, rows, sign, is_int, kd_out, ki_out):
    """Every exact product for the queries ``rows`` (the fallback)."""
    k = kd_out.shape[1]
    kd = np.empty(k, np.float64)
    ki = np.empty(k, np.int64)
    for r in range(rows.shape[0]):
        i = rows[r]
        c = np.int64(0)
        for j in range(X.shape[0]):
            c = topk_insert(kd, ki, c, sign * dot_exact(Q[i], X[j], is_int), j)
        for t in range(k):
            kd_out[i, t] = kd[t]
            ki_out[i, t] = ki[t]


@njit(cache=True, nogil=True)
def products_of_candidates(Q, X, q_rows, cand, is_int, p0, p1, out):
    """``out[i, c]`` = the exact product of query ``q_rows[i]`` and row
    ``cand[i, c]``, for lists ``p0 .. p1``."""
    for i in range(p0, p1):
        qi = q_rows[i]
        for c in range(cand.shape[1]):
            out[i, c] = dot_exact(Q[qi], X[cand[i, c]], is_int)


@njit(cache=True, nogil=True)
def cosine_distance(q, x, q_norm, x_norm, is_int):
    """``1 - q.x / (|q| |x|)`` clipped to ``[0, 2]``: the exact product
    (``dot_exact``) over the product of the norms (a zero row's norm counts
    as 1, as scikit-learn's ``normalize``: its distance to anything is 1)."""
    d = 1.0 - dot_exact(q, x, is_int) / (q_norm * x_norm)
    return min(2.0, max(0.0, d))


@njit(cache=True, nogil=True)
def cosine_of_candidates(Q, X, q_rows, cand, q_norm, x_norm, is_int, p0, p1, out):
    """``out[i, c]`` = the cosine distance of query ``q_rows[i]`` to row
    ``cand[i, c]``, for lists ``p0 .. p1``."""
    for i in range(p0, p1):
        qi = q_rows[i]
        for c in range(cand.shape[1]):
            j = cand[i, c]
            out[i, c] = cosine_distance(Q[qi], X[j], q_norm[qi], x_norm[j], is_int)


@njit(cache=True, nogil=True)
def cosine_of_pairs(Q, X, query_of_pair, row_of_pair, q_norm, x_norm, is_int, p0, p1, out):
    """``out[t]`` = the cosine distance of pair ``t`` (query, row), ``p0 .. p1``."""
    for t in range(p0, p1):
        qi = query_of_pair[t]
        j = row_of_pair[t]
        out[t] = cosine_distance(Q[qi], X[j], q_norm[qi], x_norm[j], is_int)
