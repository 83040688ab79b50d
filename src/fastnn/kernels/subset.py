"""Exact top-k of each query over its own allowed rows (filtered search with
a different allowed set per query): every allowed distance, measured by the
same exact functions as every other backend, sorted by (distance, row)."""

import numpy as np
from numba import njit

from .distances import sqdist, topk_insert
from .dot import dot_exact
from .manhattan import l1dist

# metric codes of topk_of_subsets
SQEUCLIDEAN, MANHATTAN, NEG_INNER_PRODUCT = 0, 1, 2


@njit(cache=True, nogil=True)
def topk_of_subsets(Q, X, indptr, indices, q0, q1, sign, is_int, acc32, metric_code,
                    kd_out, ki_out):
    """For queries ``q0 .. q1``: the ``k = kd_out.shape[1]`` nearest (``sign``
    +1) or farthest (-1) of the rows ``indices[indptr[i]:indptr[i + 1]]``
    (each listed once, at least k of them): exact squared Euclidean or
    Manhattan distances, or negated inner products (``metric_code``), into
    ``kd_out[i]``, rows into ``ki_out[i]``."""
    k = kd_out.shape[1]
    for i in range(q0, q1):
        kd = kd_out[i]
        ki = ki_out[i]
        c = np.int64(0)
        q = Q[i]
        for t in range(indptr[i], indptr[i + 1]):
            j = indices[t]
            if metric_code == MANHATTAN:
                d = l1dist(q, X[j], is_int, acc32)
            elif metric_code == NEG_INNER_PRODUCT:
                d = -dot_exact(q, X[j], is_int)
            else:
                d = sqdist(q, X[j], is_int, acc32)
            c = topk_insert(kd, ki, c, sign * d, j)
        for t in range(k):
            kd[t] = sign * kd[t]


@njit(cache=True, nogil=True)
def pair_distances(Q, X, query_of_pair, row_of_pair, p0, p1, is_int, acc32, metric_code, out):
    """``out[t]`` = the exact distance of query ``query_of_pair[t]`` to row
    ``row_of_pair[t]`` for pairs ``p0 .. p1`` (squared Euclidean or
    Manhattan, ``metric_code``): the radius search's candidates."""
    for t in range(p0, p1):
        q = Q[query_of_pair[t]]
        x = X[row_of_pair[t]]
        if metric_code == MANHATTAN:
            out[t] = l1dist(q, x, is_int, acc32)
        else:
            out[t] = sqdist(q, x, is_int, acc32)
