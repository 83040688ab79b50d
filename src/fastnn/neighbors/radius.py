"""Radius search: every index row within ``radius`` of each query, exactly.

A row is a neighbour when its exact distance (the engine's: integers
exactly, floats as one fixed-order float64 sum) passes scikit-learn's
test: for 'euclidean' the squared distance ``<= radius * radius`` (rounded
to float64: a row at exactly ``sqrt(3)`` is out for ``radius = sqrt(3)``,
as in sklearn), else ``distance <= radius``. On integer data sklearn's
distances are exact too, so the two agree row for row. Euclidean rows are found by float64
GEMM tiles: a row whose approximate squared distance lies above
``radius**2`` by more than the GEMM's proven error cannot be a neighbour;
the others are measured exactly. Manhattan measures every distance, a
chunk of queries at a time. Memory: one tile of approximate distances and
the candidates, never a queries x index matrix.

Results are sklearn's: an object array of index arrays per query, in index
order, or ordered by (distance, index) with ``sort_results``.
"""

import numpy as np

from .._threads import run_in_parts
from ..kernels import subset as _ks
from . import manhattan
from .brute import tile_rows
from .validation import exact_int32_sums, gemm_error_scale, row_sqnorms

# float64 bytes of the GEMM block of one query chunk against one index tile
BLOCK_BYTES = 32 << 20
# margin beyond the GEMM error: radius**2 rounded, sqrt compared
RADIUS_SLACK = 1e-12


def _check_radius(radius):
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise TypeError(f"radius must be a number, got {radius!r}") from None
    if not r >= 0 or r == np.inf:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return r


def radius_neighbors(index, Q, is_int, radius, sort_results, n_threads):
    """``(distances, rows)``: object arrays of one float64 and one int64
    array per query (see the module)."""
    radius = _check_radius(radius)
    metric = index.metric
    if metric not in ("euclidean", "sqeuclidean", "manhattan"):
        raise ValueError(f"radius search serves the Euclidean and Manhattan metrics, "
                         f"not metric={metric!r}")
    X = index.X
    nq, n = Q.shape[0], index.n_samples
    acc32 = exact_int32_sums(Q, X, is_int)
    tile = tile_rows(index.n_features)
    qchunk = max(1, BLOCK_BYTES // (8 * min(n, tile)))
    qi_parts, xj_parts, d_parts = [], [], []
    if metric == "manhattan":
        qchunk = max(1, BLOCK_BYTES // (8 * n))
        for s in range(0, nq, qchunk):
            e = min(nq, s + qchunk)
            D = np.empty((e - s, n), np.float64)
            manhattan.distance_rows(Q[s:e], X, is_int, n_threads, D)
            qi, xj = np.nonzero(D <= radius)
            qi_parts.append(qi + s)
            xj_parts.append(xj)
            d_parts.append(D[qi, xj])
    else:
        # sklearn's test: squared distances against the rounded square of the
        # radius (euclidean), or against the radius (sqeuclidean)
        r2 = radius * radius if metric == "euclidean" else radius
        err = gemm_error_scale(index.n_features, is_int)
        qn = row_sqnorms(Q, is_int, n_threads)
        xn = index.xn
        for s in range(0, nq, qchunk):
            e = min(nq, s + qchunk)
            Qf = Q[s:e].astype(np.float64)
            limit = r2 * (1.0 + RADIUS_SLACK) + err * (qn[s:e, None] + float(xn.max())) + 1e-300
            for j0 in range(0, n, tile):
                j1 = min(n, j0 + tile)
                approx = qn[s:e, None] + xn[None, j0:j1] - 2.0 * (Qf @ X[j0:j1].astype(np.float64).T)
                qi, xj = np.nonzero(approx <= limit)
                qi = (qi + s).astype(np.int64)
                xj = (xj + j0).astype(np.int64)
                d2 = np.empty(qi.size, np.float64)
                run_in_parts(lambda p0, p1: _ks.pair_distances(
                    Q, X, qi, xj, p0, p1, is_int, acc32, _ks.SQEUCLIDEAN, d2), qi.size, n_threads)
                keep = d2 <= r2
                d = np.sqrt(d2) if metric == "euclidean" else d2
                qi_parts.append(qi[keep])
                xj_parts.append(xj[keep])
                d_parts.append(d[keep])
    qi = np.concatenate(qi_parts) if qi_parts else np.zeros(0, np.int64)
    xj = np.concatenate(xj_parts) if xj_parts else np.zeros(0, np.int64)
    d = np.concatenate(d_parts) if d_parts else np.zeros(0)
    # per query: index order, or (distance, index) order
    order = np.lexsort((xj, d, qi)) if sort_results else np.lexsort((xj, qi))
    qi, xj, d = qi[order], xj[order].astype(np.int64), d[order]
    cuts = np.searchsorted(qi, np.arange(1, nq))
    dist = np.empty(nq, dtype=object)
    ind = np.empty(nq, dtype=object)
    if nq:
        for t, (a, b) in enumerate(zip(np.split(d, cuts), np.split(xj, cuts))):
            dist[t], ind[t] = a, b
    index.stats_ = {"backend": "radius", "pairs": int(d.size)}
    return dist, ind
