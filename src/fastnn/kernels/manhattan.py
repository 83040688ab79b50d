"""Numba kernels for exact Manhattan (L1, cityblock) nearest neighbours.

One exact distance defines every answer, as for the Euclidean kernels:
integers in exact integer arithmetic, floats as a float64 sum of
``|float64(a) - float64(b)|`` in index order (scipy's ``cdist(...,
'cityblock')``, which sklearn's ``manhattan_distances`` calls, sums the same
way). No bound prunes here: every distance is computed, index tiles small
enough to stay in cache, queries spread over threads, top lists sorted by
(distance, index) (negated distance for the farthest).
"""

import numpy as np
from numba import njit, prange

from ._jit import twin
from .distances import topk_insert


@njit(cache=True, nogil=True)
def l1_int(a, b):
    s = np.int64(0)
    for t in range(a.shape[0]):
        s += abs(np.int64(a[t]) - np.int64(b[t]))
    return np.float64(s)


@njit(cache=True, nogil=True)
def l1_int32(a, b):
    # byte data: the sum fits int32 while d * 255 < 2**31; truncating every
    # step keeps LLVM in 32-bit lanes (numba widens to int64 otherwise)
    s = np.int32(0)
    for t in range(a.shape[0]):
        d = np.int32(np.int32(a[t]) - np.int32(b[t]))
        s = np.int32(s + np.int32(abs(d)))
    return np.float64(s)


@njit(cache=True, nogil=True)
def l1_float(a, b):
    s = 0.0
    for t in range(a.shape[0]):
        s += abs(np.float64(a[t]) - np.float64(b[t]))
    return s


@njit(cache=True, nogil=True)
def l1dist(a, b, is_int, acc32):
    """Exact Manhattan distance (int32/int64 for integers, float64 sum in
    index order for floats)."""
    if is_int:
        if acc32:
            return l1_int32(a, b)
        return l1_int(a, b)
    return l1_float(a, b)


@njit(cache=True, nogil=True)
def l1_row(q, X, XT, j0, j1, is_int, acc32, out):
    """``out[j - j0]`` = exact distance of ``q`` to row j, j0 <= j < j1.

    Integer rows one by one (their sums vectorise along the row: integer
    addition is exact in any order). Float rows from ``XT``, the tile
    transposed to float64 (``XT[t, j - j0]``): one index-order chain per row,
    the rows in SIMD lanes, so each distance is the sequential sum exactly.
    """
    if is_int:
        for j in range(j0, j1):
            out[j - j0] = l1dist(q, X[j], is_int, acc32)
        return
    L = j1 - j0
    for j in range(L):
        out[j] = 0.0
    for t in range(q.shape[0]):
        qt = np.float64(q[t])
        col = XT[t]
        for j in range(L):
            out[j] += abs(qt - col[j])


def _l1_topk_py(Q, X, XT, j0, j1, sign, is_int, acc32, kd, ki, counts):
    """Merge the exact distances of the queries to rows ``j0 .. j1`` into
    their sorted top lists (``sign`` -1: farthest)."""
    for i in prange(Q.shape[0]):
        buf = np.empty(j1 - j0, np.float64)
        l1_row(Q[i], X, XT, j0, j1, is_int, acc32, buf)
        c = counts[i]
        for j in range(j0, j1):
            c = topk_insert(kd[i], ki[i], c, sign * buf[j - j0], j)
        counts[i] = c


l1_topk_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_l1_topk_py, "parallel"))
l1_topk_serial = njit(cache=True, nogil=True)(_l1_topk_py)


def _l1_rows_py(Q, X, XT, j0, j1, is_int, acc32, out):
    """``out[i, j - j0]`` = exact distance of query i to row j, j0 <= j < j1."""
    for i in prange(Q.shape[0]):
        l1_row(Q[i], X, XT, j0, j1, is_int, acc32, out[i])


l1_rows_parallel = njit(cache=True, parallel=True, nogil=True)(
    twin(_l1_rows_py, "parallel"))
l1_rows_serial = njit(cache=True, nogil=True)(_l1_rows_py)
