"""Exact cosine distance: ``NearestNeighborsIndex(X, metric='cosine')``.

The distance is ``1 - q.x / (|q| |x|)`` clipped to ``[0, 2]``, as
scikit-learn's ``cosine_distances`` (a zero row has distance 1 to
everything), computed exactly the engine's way: the product an integer or
a fixed-order float64 sum (``kernels.dot.cosine_distance``); neighbours
sorted by (distance, row).

The search runs on the unit rows: a float32 copy of ``x / |x|`` in an inner
Euclidean index (``metric='sqeuclidean'``, the outer index's backend, so
the pruned search's bounds and kernels serve it). For unit rows
``|q^ - x^|^2 = 2 - 2 cos``; the float32 rounding of the unit rows moves it
by at most ``8.04 u32`` and the engine's sums and ours by far less, so
every row's exact distance is at least ``E / 2 - COSINE_MARGIN`` where
``E`` is its squared distance in the inner index (zero rows: ``E <= 1``,
distance 1: the bound holds too). A query's ``K`` nearest unit rows hold
its ``k`` exact nearest rows once the k-th exact distance among them lies
strictly below ``E_K / 2 - COSINE_MARGIN`` (every row left out has a
larger distance); until then ``K`` grows (``GROWTH``), up to every row.
Farthest neighbours mirror it (``E_K / 2 + margin``; zero rows, which
escape that bound, join every list). Radius: the unit
rows with ``E <= 2 (r + margin)`` are the candidates, tested exactly.
"""

import numpy as np

from .._threads import run_in_parts
from ..kernels import dot as _kd
from .registry import Backend, register
from .validation import UNIT_ROUNDOFF_F32, UNIT_ROUNDOFF_F64, row_sqnorms

# the unit rows' float32 rounding moves E by 8.04 u32; the sums by
# ~4 (d + 4) u64: both doubled
COSINE_MARGIN_F32 = 2 * 4.1 * UNIT_ROUNDOFF_F32
# candidates beyond k in the first round, and the growth of K per round
# (CIFAR HOG, k=5, FASTNN_AMX=0, alternating runs: 4 extra 1.23-1.42 s, 16
# extra 1.64-1.90 s; one round either way; equal on AMX)
FIRST_EXTRA = 4
GROWTH = 4
# rows normalised per block (bounds the float64 temporary)
NORMALISE_BLOCK = 8192


def margin(n_features):
    return COSINE_MARGIN_F32 + 8.0 * (n_features + 4) * UNIT_ROUNDOFF_F64


def norms(X, is_int, n_threads):
    """Row norms, a zero norm counted as 1 (sklearn's ``normalize``), and
    the zero rows' ids."""
    out = np.sqrt(row_sqnorms(X, is_int, n_threads))
    zero = np.flatnonzero(out == 0.0)
    out[zero] = 1.0
    return out, zero


def unit_rows(X, row_norms):
    """float32 ``x / |x|`` (zero rows stay zero)."""
    out = np.empty(X.shape, np.float32)
    for s in range(0, X.shape[0], NORMALISE_BLOCK):
        e = min(X.shape[0], s + NORMALISE_BLOCK)
        out[s:e] = X[s:e].astype(np.float64) / row_norms[s:e, None]
    return out


def unit_index(index, n_threads):
    """The inner index of the unit rows, the outer rows' norms and the zero
    rows' ids (built on first use, cached in ``index.built``; dropped when
    rows are added)."""
    built = index.built
    if built.cosine_unit_index is None:
        from .index import NearestNeighborsIndex
        x_norm, zero_rows = norms(index.X, index.is_int, n_threads)
        params = index.build_params()
        params["metric"] = "sqeuclidean"
        built.cosine_unit_index = (NearestNeighborsIndex(unit_rows(index.X, x_norm), **params),
                                   x_norm, zero_rows)
    return built.cosine_unit_index


@register
class CosineBackend(Backend):
    name = "cosine"
    metrics = ("cosine",)
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        search(index, request.queries, request.is_int, request.k, request.farthest,
               request.n_threads, dist, ind)


def search(index, Q, is_int, k, farthest, n_threads, dist, ind):
    """Fill ``dist`` / ``ind`` (``(nq, k)``) with the exact k nearest (or
    farthest) rows by cosine distance (see the module)."""
    inner, x_norm, zero_rows = unit_index(index, n_threads)
    n = index.n_samples
    q_norm, zero_queries = norms(Q, is_int, n_threads)
    Qu = unit_rows(Q, q_norm)
    eps = margin(index.n_features)
    sign = -1.0 if farthest else 1.0
    pending = np.arange(Q.shape[0], dtype=np.int64)
    # a zero query is at distance 1 from every row: the first k rows
    dist[zero_queries] = 1.0
    ind[zero_queries] = np.arange(k)
    pending = np.setdiff1d(pending, zero_queries)
    # farthest: a zero row (distance 1, E = 1) escapes the bound E / 2 +
    # margin, so the first k zero rows join every list and the inner
    # search's zero rows leave it
    joined = zero_rows[:k] if farthest else zero_rows[:0]
    K, rounds = min(n, k + FIRST_EXTRA), 0
    while pending.size:
        rounds += 1
        E, cand = inner.kneighbors(Qu[pending], K, farthest=farthest)
        D = np.empty(cand.shape, np.float64)
        run_in_parts(lambda p0, p1: _kd.cosine_of_candidates(
            Q, index.X, pending, cand, q_norm, x_norm, is_int, p0, p1, D), pending.size,
            n_threads)
        if joined.size:
            D[np.isin(cand, zero_rows)] = -np.inf
            cand = np.hstack([cand, np.broadcast_to(joined, (pending.size, joined.size))])
            D = np.hstack([D, np.ones((pending.size, joined.size))])
        width = cand.shape[1]
        rows = np.repeat(np.arange(pending.size), width)
        order = np.lexsort((cand.ravel(), sign * D.ravel(), rows)).reshape(pending.size,
                                                                           width) % width
        D = np.take_along_axis(D, order, axis=1)[:, :k]
        cand = np.take_along_axis(cand, order, axis=1)[:, :k]
        if K == n:
            done = np.ones(pending.size, bool)
        elif farthest:
            done = D[:, -1] > E[:, -1] / 2.0 + eps
        else:
            done = D[:, -1] < E[:, -1] / 2.0 - eps
        dist[pending[done]] = D[done]
        ind[pending[done]] = cand[done]
        pending = pending[~done]
        K = min(n, K * GROWTH)
    index.stats_ = {"backend": "cosine", "rounds": rounds,
                    "unit_rows_backend": inner.stats_.get("backend")}


def radius_pairs(index, Q, is_int, radius, n_threads):
    """``(queries, rows, distances)`` of every pair with cosine distance
    ``<= radius`` (unsorted)."""
    inner, x_norm, _ = unit_index(index, n_threads)
    q_norm, _ = norms(Q, is_int, n_threads)
    reach = 2.0 * (radius + margin(index.n_features))
    _, cand = inner.radius_neighbors(unit_rows(Q, q_norm), reach)
    qi = np.repeat(np.arange(len(cand), dtype=np.int64), [len(c) for c in cand])
    xj = np.concatenate(list(cand)).astype(np.int64) if len(cand) else np.zeros(0, np.int64)
    d = np.empty(qi.size, np.float64)
    run_in_parts(lambda p0, p1: _kd.cosine_of_pairs(Q, index.X, qi, xj, q_norm, x_norm, is_int,
                                                    p0, p1, d), qi.size, n_threads)
    keep = d <= radius
    return qi[keep], xj[keep], d[keep]
