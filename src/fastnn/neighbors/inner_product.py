"""Exact maximum-inner-product search: ``NearestNeighborsIndex(X,
metric='ip')``.

Neighbours are ordered by decreasing product ``q . x`` (``farthest=True``:
increasing), ties to the lower row; the returned "distances" are the
products. The product is exact: an integer for integer data, else a float64
sum in index order (``kernels.dot.dot_exact``). Two routes (backends):

* ``'inner-product'`` (GEMM, ``backend='brute'``, farthest, large k, data
  the bounds cannot prune): float64 GEMM tiles give every product within
  ``(d + 2) u |q| max|x|`` (``u`` = 2**-53), the best ``k + 8`` by that key
  are measured exactly, and a query whose best left-out key could still
  reach (or tie) its k-th exact product is scanned exactly in full.
* ``'inner-product-pruned'`` (``backend='auto'``, k up to 256, where the pruned search
  would serve the rows): the classic reduction of MIPS to a Euclidean
  search. Each row becomes ``x' = [x, a, b]`` (float32) with
  ``a^2 + b^2 = M - |x|^2``, ``M`` the largest ``|x|^2``, so every ``|x'|^2``
  equals ``M`` up to float64 rounding (``b`` carries what the float32 ``a``
  rounded away); a query becomes ``q' = [s q / |q|, 0, 0]``, ``s = sqrt(M)``
  (queries and rows on spheres of one size). Then
  ``|q' - x'|^2 = |q'|^2 + |x'|^2 - 2 q'.x``: the Euclidean order of the
  ``x'`` is the order of the products, and the pruned search (its bounds
  and kernels) serves it in an inner ``sqeuclidean`` index. Rounding moves
  it by at most ``margin``; so a query's ``K`` nearest augmented rows hold
  its ``k`` largest products once the k-th exact product among them lies
  strictly above ``|q| ((|q'|^2 + max|x'|^2 - E_K) / (2 s) + margin)`` (every row
  left out has a smaller product, so ties cannot be lost); until then ``K``
  grows (``GROWTH``), up to every row. The augmented rows cost a float32
  copy of the data, kept with the index (dropped when rows are added).
"""

from typing import NamedTuple

import numpy as np

from .._threads import run_in_parts
from ..kernels import dot as _kd
from .registry import (AUTO_MIN_FEATURES, AUTO_MIN_PAIRS, AUTO_MIN_ROWS, PRUNED_AUTO_MAX_K,
                       Backend, SearchRequest, auto_choice, register)
from .topk import RERANK_EXTRA
from .validation import UNIT_ROUNDOFF_F32, UNIT_ROUNDOFF_F64, row_sqnorms

# index rows per GEMM tile, queries per chunk
INDEX_TILE_ROWS = 8192
QUERY_CHUNK_ROWS = 2048
# the pruned route: candidates beyond k in the first round, the growth of K
# per round (as the cosine search), rows cast to float32 per block (CIFAR
# HOG, k=10, FASTNN_AMX=0, alternating runs: 4 extra 1.72-2.05 s, 16 extra
# 2.07-2.30 s; one round either way)
FIRST_EXTRA = 4
GROWTH = 4
AUGMENT_BLOCK = 8192
# the margin's derived terms are doubled
MARGIN_SAFETY = 2.0
# the Euclidean route takes data whose largest squared norm lies in this
# range: float32 then holds every augmented coordinate and its square with
# room (float64 data may reach 1e150), and float32's subnormal rounding
# (2**-150 a coordinate) stays far below the margin's u32 max|x| term
AUGMENT_MIN_SQNORM = 1e-60
AUGMENT_MAX_SQNORM = 1e30
# queries whose squared norm float64 holds with full precision
QUERY_MIN_SQNORM = 1e-280
QUERY_MAX_SQNORM = 1e280


@register
class InnerProductBackend(Backend):
    name = "inner-product"
    metrics = ("ip",)
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        search(index, request.queries, request.is_int, request.k, request.farthest,
               request.n_threads, request.chunk_size, dist, ind)


def search(index, Q, is_int, k, farthest, n_threads, chunk_size, dist, ind):
    """Fill ``dist`` / ``ind`` (``(nq, k)``) with the top-k products."""
    X = index.X
    n, d = X.shape
    sign = 1.0 if farthest else -1.0
    kk = min(n, k + RERANK_EXTRA)
    # float32 data and queries: a float32 GEMM (every product within
    # (d + 2) u32 |q| |x|; the exact re-rank settles the order); integers and
    # float64 data: float64 (integers then exactly: check_data bounds them)
    f32 = X.dtype == np.float32 and Q.dtype == np.float32
    gemm_dtype = np.float32 if f32 else np.float64
    unit = UNIT_ROUNDOFF_F32 if f32 else UNIT_ROUNDOFF_F64
    tile = INDEX_TILE_ROWS
    qchunk = chunk_size or QUERY_CHUNK_ROWS
    # (the index's cached squared row norms: no float64 copy of X per search)
    xnorm_max = float(np.sqrt(index.xn.max())) if n else 0.0
    full = 0
    for s in range(0, Q.shape[0], qchunk):
        e = min(Q.shape[0], s + qchunk)
        Qc = Q[s:e]
        Qf = Qc.astype(gemm_dtype)
        Q64 = Qc.astype(np.float64)
        nq = e - s
        # (integers in float64: every GEMM product is exact, check_data bounds them)
        err = (np.zeros(nq) if is_int and not f32 else
               (d + 2) * unit * 1.01 * np.sqrt(np.einsum("ij,ij->i", Q64, Q64)) * xnorm_max)
        cand_d = np.empty((nq, kk), np.float64)
        cand_i = np.empty((nq, kk), np.int64)
        counts = np.zeros(nq, np.int64)
        for j0 in range(0, n, tile):
            j1 = min(n, j0 + tile)
            G = Qf @ X[j0:j1].astype(gemm_dtype, copy=False).T
            run_in_parts(lambda q0, q1: _kd.merge_products(G, q0, q1, j0, sign, cand_d, cand_i,
                                                           counts), nq, n_threads)
        kd = np.empty((nq, k), np.float64)
        ki = np.empty((nq, k), np.int64)
        need = np.zeros(nq, np.bool_)
        run_in_parts(lambda q0, q1: _kd.rerank_products(Qc, X, q0, q1, cand_d, cand_i, counts,
                                                        sign, is_int, err, k, kd, ki, need),
                     nq, n_threads)
        rows = np.flatnonzero(need).astype(np.int64)
        if rows.size:
            full += rows.size
            run_in_parts(lambda a, b: _kd.scan_products(Qc, X, rows[a:b], sign, is_int, kd, ki),
                         rows.size, n_threads)
        dist[s:e] = sign * kd
        ind[s:e] = ki
    index.stats_ = {"backend": "brute", "metric": "ip", "full_scans": int(full)}


class AugmentedRows(NamedTuple):
    """The pruned route's state (``index.built.ip_augmented``)."""
    inner: object           # sqeuclidean index of the rows [x, a, b], or None: no pruning here
    norm_max: float         # the largest computed |x'|^2
    exact_float32: bool     # whether float32 holds every value of the data exactly


def augmented_rows(X):
    """``(rows, largest |x'|^2)``: float32 ``[x, a, b]`` with ``a^2 + b^2 =
    M - |x~|^2`` (``x~`` the float32 row, ``M`` the largest ``|x~|^2``; ``a``
    rounded down so the rest is never negative, ``b`` its square root)."""
    n, d = X.shape
    out = np.zeros((n, d + 2), np.float32)
    sq = np.empty(n, np.float64)
    for s in range(0, n, AUGMENT_BLOCK):
        e = min(n, s + AUGMENT_BLOCK)
        block = X[s:e].astype(np.float32)
        out[s:e, :d] = block
        block64 = block.astype(np.float64)
        sq[s:e] = np.einsum("ij,ij->i", block64, block64)
    top = sq.max() if n else 0.0
    rest = top - sq
    a = np.sqrt(rest).astype(np.float32)
    high = a.astype(np.float64) ** 2 > rest
    a[high] = np.nextafter(a[high], np.float32(0))
    b = np.sqrt(np.maximum(rest - a.astype(np.float64) ** 2, 0.0)).astype(np.float32)
    out[:, d] = a
    out[:, d + 1] = b
    norms = sq + a.astype(np.float64) ** 2 + b.astype(np.float64) ** 2
    return out, float(norms.max()) if n else 0.0


def augmented(index, n_threads):
    """The pruned route's ``AugmentedRows`` (built on first use; ``inner``
    None where the inner index's 'auto' would not prune these rows or their
    norms leave the route's range)."""
    built = index.built
    if built.ip_augmented is not None:
        return built.ip_augmented
    largest = float(index.xn.max()) if index.n_samples else 0.0
    if not AUGMENT_MIN_SQNORM <= largest <= AUGMENT_MAX_SQNORM:
        built.ip_augmented = AugmentedRows(None, largest, False)
    else:
        from .index import NearestNeighborsIndex
        rows, norm_max = augmented_rows(index.X)
        params = index.build_params()
        params.update(metric="sqeuclidean", backend="auto")
        inner = NearestNeighborsIndex(rows, **params)
        probe = SearchRequest(queries=None, is_int=False, k=1, farthest=False,
                              n_threads=n_threads, chunk_size=None)
        if auto_choice(inner, probe) != "pruned":
            inner = None
        exact32 = index.X.dtype in (np.float32, np.uint8, np.int8)
        built.ip_augmented = AugmentedRows(inner, norm_max, exact32)
    return built.ip_augmented


def query_scale(norm_max):
    """The length of the augmented queries: the largest row norm, so that
    queries and rows lie on spheres of one size and the Euclidean distances
    spread over ``[0, 4 M]`` (unit queries would leave every distance within
    ``2 sqrt(M)`` of ``M``: nothing for the pruned search's bounds to
    separate)."""
    return float(np.sqrt(norm_max)) if norm_max > 0 else 1.0


def margin(n_features, norm_max, exact_float32):
    """How far ``(|q'|^2 + max|x'|^2 - E) / (2 s)`` may lie below a left-out
    row's product over ``|q|`` (the module; ``s = query_scale``): the inner
    index's float64 distance sums, the norms' sums, the float32 scaled query
    (and float32 rows where float32 does not hold the data), the exact
    product's own float64 sum, and this formula's roundings; doubled."""
    d = n_features + 2
    u, u32 = UNIT_ROUNDOFF_F64, UNIT_ROUNDOFF_F32
    s = query_scale(norm_max)
    x_max = np.sqrt(norm_max) * (1.0 + 4.0 * u32)
    size = 2.0 * (s * s + norm_max) * (1.0 + 4.0 * u32)      # bounds |q'|^2 + |x'|^2
    distance_sums = 4.0 * (d + 6) * u * size
    norm_sums = (d + 4) * u * size
    formula = 8.0 * u * 3.0 * size
    scaled_query = (u32 + (d + 4) * u) * 1.01 * x_max
    float32_rows = 0.0 if exact_float32 else 1.01 * u32 * x_max
    product_sum = (d + 2) * u * x_max
    return MARGIN_SAFETY * ((distance_sums + norm_sums + formula) / (2.0 * s) + scaled_query
                            + float32_rows + product_sum)


@register
class PrunedInnerProductBackend(Backend):
    name = "inner-product-pruned"
    metrics = ("ip",)
    farthest = False
    max_k = PRUNED_AUTO_MAX_K

    @classmethod
    def is_usable_for(cls, index, request):
        # (a small batch before the augmented rows exist: the GEMM route,
        # as the Euclidean 'auto' takes brute force there)
        small_batch = (index.built.ip_augmented is None
                       and request.queries.shape[0] * index.n_samples < AUTO_MIN_PAIRS)
        return (super().is_usable_for(index, request) and not small_batch
                and index.n_samples >= AUTO_MIN_ROWS and index.n_features >= AUTO_MIN_FEATURES
                and augmented(index, request.n_threads).inner is not None)

    @staticmethod
    def search(index, request, dist, ind):
        search_pruned(index, request.queries, request.is_int, request.k, request.n_threads,
                      dist, ind)


def search_pruned(index, Q, is_int, k, n_threads, dist, ind):
    """Fill ``dist`` / ``ind`` with the top-k products through the
    augmented rows' Euclidean search (see the module)."""
    aug = augmented(index, n_threads)
    X = index.X
    n, d = X.shape
    q_sqnorm = row_sqnorms(Q, is_int, n_threads)
    q_norm = np.sqrt(q_sqnorm)
    zero = q_norm == 0.0
    # a zero query's products are all 0: the first k rows
    dist[zero] = 0.0
    ind[zero] = np.arange(k)
    # a norm whose square leaves float64's normal range is not accurate
    # enough to scale by: those queries take the GEMM route
    odd = ~zero & ((q_sqnorm < QUERY_MIN_SQNORM) | (q_sqnorm > QUERY_MAX_SQNORM))
    if odd.any():
        rows = np.flatnonzero(odd)
        odd_d = np.empty((rows.size, k), np.float64)
        odd_i = np.empty((rows.size, k), np.int64)
        search(index, np.ascontiguousarray(Q[rows]), is_int, k, False, n_threads, None, odd_d,
               odd_i)
        dist[rows] = odd_d
        ind[rows] = odd_i
    pending = np.flatnonzero(~zero & ~odd).astype(np.int64)
    Qa = np.zeros((Q.shape[0], d + 2), np.float32)
    qq = np.empty(Q.shape[0], np.float64)        # |q'|^2 of the float32 scaled queries
    length = query_scale(aug.norm_max)
    for s in range(0, Q.shape[0], AUGMENT_BLOCK):
        e = min(Q.shape[0], s + AUGMENT_BLOCK)
        scale = np.where(zero[s:e], 1.0, q_norm[s:e]) / length
        Qa[s:e, :d] = Q[s:e].astype(np.float64) / scale[:, None]
        block64 = Qa[s:e].astype(np.float64)
        qq[s:e] = np.einsum("ij,ij->i", block64, block64)
    eps = margin(d, aug.norm_max, aug.exact_float32)
    K, inner_backends = min(n, k + FIRST_EXTRA), []
    while pending.size:
        E, cand = aug.inner.kneighbors(Qa[pending], K, backend="pruned")
        inner_backends.append(aug.inner.stats_.get("backend"))
        P = np.empty(cand.shape, np.float64)
        run_in_parts(lambda p0, p1: _kd.products_of_candidates(Q, X, pending, cand, is_int,
                                                               p0, p1, P),
                     pending.size, n_threads)
        rows = np.repeat(np.arange(pending.size), K)
        order = np.lexsort((cand.ravel(), -P.ravel(), rows)).reshape(pending.size, K) % K
        P = np.take_along_axis(P, order, axis=1)[:, :k]
        cand = np.take_along_axis(cand, order, axis=1)[:, :k]
        if K == n:
            done = np.ones(pending.size, bool)
        else:
            bracket = (qq[pending] + aug.norm_max - E[:, -1]) / (2.0 * length) + eps
            # (|q|'s own rounding: widen the bound by its relative error)
            bound = q_norm[pending] * (bracket + np.abs(bracket) * 4.0 * (d + 4) *
                                       UNIT_ROUNDOFF_F64)
            done = P[:, -1] > bound
        dist[pending[done]] = P[done]
        ind[pending[done]] = cand[done]
        pending = pending[~done]
        K = min(n, K * GROWTH)
    # (the inner search of each round: 'pruned' until K outgrows it)
    index.stats_ = {"backend": "inner-product-pruned", "metric": "ip",
                    "rounds": len(inner_backends), "inner_backends": tuple(inner_backends)}
