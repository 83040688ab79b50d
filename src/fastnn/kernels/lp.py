"""Exact Chebyshev (L-infinity) and Minkowski (L-p) distances, every one
computed (no bound prunes them).

Both follow scikit-learn's ``DistanceMetric`` formulas in float64:
Chebyshev is the largest ``|float64(a) - float64(b)|`` (exact); Minkowski's
rank-preserving "reduced" distance is ``sum |float64(a) - float64(b)| ** p``
in index order (its distance that sum ``** (1 / p)``). sklearn's values
agree to a few float64 roundings (float32 data: sklearn computes in
float32).
"""

import numpy as np
from numba import njit

# metric codes of lp_rows
CHEBYSHEV, MINKOWSKI = 0, 1


@njit(cache=True, nogil=True)
def reduced_distance(a, b, metric_code, p):
    """Chebyshev distance, or Minkowski's reduced distance ``sum |a-b|^p``."""
    if metric_code == CHEBYSHEV:
        largest = 0.0
        for t in range(a.shape[0]):
            d = abs(np.float64(a[t]) - np.float64(b[t]))
            if d > largest:
                largest = d
        return largest
    total = 0.0
    for t in range(a.shape[0]):
        total += abs(np.float64(a[t]) - np.float64(b[t])) ** p
    return total


@njit(cache=True, nogil=True)
def lp_rows(Q, XT, j0, q0, q1, metric_code, p, out):
    """``out[i, j0 + c]`` = the reduced distance of query ``i`` to the index
    row of column ``c`` of the transposed float64 tile ``XT`` (features x
    rows), for queries ``q0 .. q1``. The inner loop runs over the tile's
    rows (contiguous, vectorised); each row's sum still runs over its
    features in index order, as ``reduced_distance``."""
    d, width = XT.shape
    acc = np.empty(width, np.float64)
    for i in range(q0, q1):
        acc[:] = 0.0
        for t in range(d):
            qt = np.float64(Q[i, t])
            row = XT[t]
            if metric_code == CHEBYSHEV:
                for c in range(width):
                    acc[c] = max(acc[c], abs(qt - row[c]))
            else:
                for c in range(width):
                    acc[c] += abs(qt - row[c]) ** p
        out[i, j0:j0 + width] = acc


@njit(cache=True, nogil=True)
def lp_pairs(Q, X, query_of_pair, row_of_pair, p0, p1, metric_code, p, out):
    """``out[t]`` = the reduced distance of pair ``t``, ``p0 .. p1``."""
    for t in range(p0, p1):
        out[t] = reduced_distance(Q[query_of_pair[t]], X[row_of_pair[t]], metric_code, p)
