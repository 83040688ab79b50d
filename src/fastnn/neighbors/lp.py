"""Chebyshev and Minkowski (any p >= 1): ``NearestNeighborsIndex(X,
metric='chebyshev')`` / ``(X, metric='minkowski', p=3)``.

Every exact distance is computed (``kernels/lp.py``, scikit-learn's
formulas in float64), a chunk of queries at a time over threads; the k best by
(distance, row) come from a partition at the k-th distance and a sort of the
rows at or below it (distances, not reduced ones: ties as returned). Radius: the rows whose reduced distance is at most
the radius reduced as sklearn reduces it (``radius ** p``).
"""

import numpy as np

from .._threads import run_in_parts
from ..kernels import lp as _klp
from .registry import Backend, register

# bytes of one chunk of reduced distances (float64, queries x index rows),
# and of one transposed index tile
CHUNK_BYTES = 64 << 20
TILE_BYTES = 256 << 10
LP_METRICS = ("chebyshev", "minkowski")


def _code(index):
    return _klp.CHEBYSHEV if index.metric == "chebyshev" else _klp.MINKOWSKI


def _p(index):
    return 1.0 if index.metric == "chebyshev" else float(index.p)


def to_distance(index, reduced):
    """Reduced distances as distances (``** (1 / p)`` for Minkowski)."""
    if index.metric == "chebyshev":
        return reduced
    return reduced ** (1.0 / float(index.p))


def reduced_rows(index, Q, n_threads):
    """Every reduced distance of the queries ``Q``, chunk by chunk: yields
    ``(s, e, D)`` with ``D[i - s, j]`` for queries ``s .. e``. The index
    goes by transposed float64 tiles of ``TILE_BYTES`` (they stay in cache
    while the chunk's queries pass over them)."""
    n = index.n_samples
    chunk = max(1, CHUNK_BYTES // (8 * max(1, n)))
    tile = max(16, TILE_BYTES // (8 * max(1, index.n_features)))
    code, p = _code(index), _p(index)
    for s in range(0, Q.shape[0], chunk):
        e = min(Q.shape[0], s + chunk)
        D = np.empty((e - s, n), np.float64)
        Qc = np.ascontiguousarray(Q[s:e])
        for j0 in range(0, n, tile):
            XT = np.ascontiguousarray(index.X[j0:j0 + tile].T, dtype=np.float64)
            run_in_parts(lambda q0, q1: _klp.lp_rows(Qc, XT, j0, q0, q1, code, p, D), e - s,
                         n_threads)
        yield s, e, D


@register
class LpBackend(Backend):
    name = "lp"
    metrics = LP_METRICS
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        k = request.k
        sign = -1.0 if request.farthest else 1.0
        for s, e, D in reduced_rows(index, request.queries, request.n_threads):
            # ranked by the distances returned, not the reduced ones: two
            # reduced sums an ulp apart can give the same distance (** 1/p),
            # and then the lower row comes first
            D = to_distance(index, D)
            key = sign * D
            kth = np.partition(key, k - 1, axis=1)[:, k - 1:k]
            rows, cols = np.nonzero(key <= kth)          # (row-major: rows, then cols, ascending)
            order = np.lexsort((cols, key[rows, cols], rows))
            rows, cols = rows[order], cols[order]
            first = np.searchsorted(rows, np.arange(e - s))
            take = first[:, None] + np.arange(k)[None, :]
            ind[s:e] = cols[take]
            dist[s:e] = D[rows[take], cols[take]]
        index.stats_ = {"backend": "lp", "metric": index.metric}


def radius_pairs(index, Q, radius, n_threads):
    """``(queries, rows, distances)`` within ``radius`` (sklearn's test on
    reduced distances: ``reduced <= radius ** p``)."""
    limit = radius if index.metric == "chebyshev" else radius ** float(index.p)
    parts = []
    for s, e, D in reduced_rows(index, Q, n_threads):
        qi, xj = np.nonzero(D <= limit)
        parts.append((qi + s, xj, to_distance(index, D[qi, xj])))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(c) for c in zip(*parts))
