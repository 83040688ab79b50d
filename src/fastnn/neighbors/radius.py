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
the candidates, never a queries x index matrix. On a large Euclidean
index of many features (or with ``backend='pruned'``) a cheaper lower bound
comes first: the distance projected on the index's 128 principal directions
plus the difference of the residual norms (``_radius_bounds`` proves its
margin); only the pairs it leaves within the radius are measured.

Results are sklearn's: an object array of index arrays per query, in index
order, or ordered by (distance, index) with ``sort_results``.
"""

from typing import NamedTuple

import numpy as np

from .._threads import run_in_parts
from ..kernels import subset as _ks
from . import manhattan
from .brute import tile_rows
from .validation import UNIT_ROUNDOFF_F32, exact_int32_sums, gemm_error_scale, row_sqnorms

UNIT_ROUNDOFF_F64 = 2.0 ** -53

# float64 bytes of the GEMM block of one query chunk against one index tile
BLOCK_BYTES = 32 << 20
# margin beyond the GEMM error: radius**2 rounded, sqrt compared
RADIUS_SLACK = 1e-12
# projected lower bounds (``_by_projection``): the directions kept (CIFAR
# HOG, 10,000 queries: 128 leave 1.4 candidates per neighbour and run in
# 1.5 s, 96 leave 4.5 and take 1.8 s; raw pixels barely differ), the index
# size and width from which 'auto' takes them, rows projected per block
PROJECTION_COMPONENTS = 128
PROJECTION_MIN_ROWS = 4096
PROJECTION_MIN_FEATURES = 128
PROJECTION_CHUNK_ROWS = 4096
# relative rounding allowance of centred float64 rows (at least 4 d u64),
# and the factor of room on the bound's proven margin
PROJECTION_CENTRE_REL = 1e-12
PROJECTION_SLACK_SPARE = 2.0


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
    if metric not in ("euclidean", "sqeuclidean", "manhattan", "cosine"):
        raise ValueError(f"radius search serves the Euclidean, Manhattan and cosine "
                         f"metrics, not metric={metric!r}")
    nq = Q.shape[0]
    acc32 = exact_int32_sums(Q, index.X, is_int)
    parts = []
    every = np.arange(nq, dtype=np.int64)
    projected = _uses_projection(index, nq)
    candidates = None
    if metric == "cosine":
        from .cosine import radius_pairs
        parts.append(radius_pairs(index, Q, is_int, radius, n_threads))
    elif projected:
        candidates = _by_projection(index, Q, every, is_int, acc32, radius, n_threads, parts)
    else:
        _by_blocks(index, Q, every, is_int, acc32, radius, n_threads, parts)
    qi = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    xj = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    d = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    # per query: index order, or (distance, index) order
    order = np.lexsort((xj, d, qi)) if sort_results else np.lexsort((xj, qi))
    qi, xj, d = qi[order], xj[order].astype(np.int64), d[order]
    cuts = np.searchsorted(qi, np.arange(1, nq))
    dist = np.empty(nq, dtype=object)
    ind = np.empty(nq, dtype=object)
    if nq:
        for t, (a, b) in enumerate(zip(np.split(d, cuts), np.split(xj, cuts))):
            dist[t], ind[t] = a, b
    index.stats_ = {"backend": "radius", "pairs": int(d.size),
                    "stage1": ("cosine-unit-rows" if metric == "cosine" else
                               "projection" if projected else "every-row")}
    if projected and metric != "cosine":
        index.stats_["candidates"] = candidates      # pairs measured exactly
    return dist, ind


def _squared_limit(metric, radius):
    """sklearn's test on squared distances: against the rounded square of
    the radius (euclidean), or against the radius (sqeuclidean)."""
    return radius * radius if metric == "euclidean" else radius


class RadiusBounds(NamedTuple):
    """The radius search's projection of the index (``index.built``)."""
    centre: np.ndarray          # (d,) float64: the spectrum's mean
    directions: np.ndarray      # (m, d) float64, orthonormalised
    rows: np.ndarray            # (n, m) float32: P (x - c)
    row_sqnorms: np.ndarray     # (n,) float64: |rows|^2
    row_residuals: np.ndarray   # (n,) float64: |x - c - P^T P (x - c)|
    row_norms: np.ndarray       # (n,) float64: |x - c| plus its rounding allowance
    slack_per_norm2: float      # the bound's margin per (|q - c| + |x - c|)^2
    centre_rel: float           # relative rounding allowance of the centred norms


def _uses_projection(index, nq):
    """The projected lower bounds (stage 1 below) pay on a large Euclidean
    index of many features; ``backend='pruned'`` always takes them,
    ``'brute'`` and ``'faiss'`` never (answers are the same)."""
    if index.metric not in ("euclidean", "sqeuclidean") or nq == 0:
        return False
    if index.backend == "pruned":
        return True
    return (index.backend == "auto" and index.n_samples >= PROJECTION_MIN_ROWS
            and index.n_features >= PROJECTION_MIN_FEATURES)


def _project(A, fit, chunk=PROJECTION_CHUNK_ROWS):
    """Rows of ``A`` projected, ``fit = (centre, P, centre_rel)``: float32
    P(a - c), |.|^2 of those float32 values, residual norms
    sqrt(|a - c|^2 - |P(a - c)|^2), centred norms plus their allowance."""
    centre, P, centre_rel = fit
    n, m = A.shape[0], P.shape[0]
    centre_norm = float(np.linalg.norm(centre))
    rows = np.empty((n, m), np.float32)
    sqn, res, nrm = np.empty(n), np.empty(n), np.empty(n)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        C = A[s:e].astype(np.float64)
        C -= centre
        a = C @ P.T
        rows[s:e] = a
        a32 = rows[s:e].astype(np.float64)
        sqn[s:e] = np.einsum("ij,ij->i", a32, a32)
        centred_sq = np.einsum("ij,ij->i", C, C)
        res[s:e] = np.sqrt(np.maximum(0.0, centred_sq - np.einsum("ij,ij->i", a, a)))
        centred = np.sqrt(centred_sq)
        # |a - c| <= |C| + |c|: the rounding of the centred row, within
        # centre_rel of the uncentred norm, is inside this allowance
        nrm[s:e] = centred + centre_rel * (centred + 2.0 * centre_norm)
    return rows, sqn, res, nrm


def _radius_bounds(index):
    """The projection of the radius search (cached in ``index.built``;
    dropped when rows are added).

    Why the bound of ``kernels.subset.radius_bound_count`` is a lower bound
    of the exact squared distance, with v = q - x = q' - x' (centred), P
    the m orthonormalised directions (|P P^T - I| <= E), R = I - P^T P:

    * |v|^2 >= |Pv|^2 + |Rv|^2 - 3 m E |v|^2 (P orthonormal up to E),
      and |v| <= |q'| + |x'|.
    * |Pv|^2 >= |a32 - b32|^2 - 2 (da + db) |a32 - b32| with the float32
      rounded projections within da <= 1.01 u32 |a| (float64 products far
      inside), so the loss is at most 2.03 u32 (|q'| + |x'|)^2.
    * |a32 - b32|^2 = |a32|^2 + |b32|^2 - 2 a32.b32 with the product a
      float32 GEMM of m terms: error <= 1.01 m u32 |a||b| <= 0.26 m u32
      (|q'| + |x'|)^2, doubled: 0.51 m u32 (...)^2.
    * |Rv| >= |rho_q - rho_x| (triangle inequality). The residual norms
      are computed as sqrt(|q'|^2 - |Pq'|^2): the squares carry at most
      (8 (d + m) u64 + 3 m E) |q'|^2 of error, so the norms at most its
      square root times |q'| (|sqrt x - sqrt y| <= sqrt |x - y|), call it
      eta |q'|; the loss is within 2.02 eta (|q'| + |x'|)^2.
    * The centred rows carry relative errors within centre_rel of the
      uncentred norms, which ``_project`` adds to |q'| and |x'|.

    ``slack_per_norm2`` sums these, times ``PROJECTION_SLACK_SPARE``."""
    built = index.built
    if built.radius_bounds is None:
        from .pruned import backend as pruned_backend
        spectrum = pruned_backend.spectrum(index)
        m = min(PROJECTION_COMPONENTS, spectrum.directions.shape[0])
        P = np.ascontiguousarray(np.linalg.qr(spectrum.directions[:m].T.astype(np.float64))[0].T)
        orthonormality = float(np.abs(P @ P.T - np.eye(m)).max())
        d = index.n_features
        centre_rel = max(PROJECTION_CENTRE_REL, 4.0 * d * UNIT_ROUNDOFF_F64)
        residual_rel = np.sqrt(8.0 * (d + m) * UNIT_ROUNDOFF_F64 + 3.0 * m * orthonormality)
        centre = np.asarray(spectrum.mean, np.float64)
        rows, sqn, res, nrm = _project(index.X, (centre, P, centre_rel))
        slack = ((0.6 * m + 2.1) * UNIT_ROUNDOFF_F32 + 3.0 * m * orthonormality
                 + 2.02 * residual_rel) * PROJECTION_SLACK_SPARE
        built.radius_bounds = RadiusBounds(centre, P, rows, sqn, res, nrm, slack, centre_rel)
    return built.radius_bounds


def _by_projection(index, Q, queries, is_int, acc32, radius, n_threads, parts):
    """Stage 1: the projected lower bound of every (query, row) pair (a
    float32 GEMM over m directions instead of every feature, then
    ``radius_bound_count`` / ``radius_bound_fill``); stage 2: the exact squared distance of the
    pairs whose bound is within the radius. Appends ``(queries, rows,
    distances)``."""
    metric = index.metric
    r2 = _squared_limit(metric, radius)
    bounds = _radius_bounds(index)
    n = index.n_samples
    limit = r2 * (1.0 + max(RADIUS_SLACK, 2.0 * index.n_features * UNIT_ROUNDOFF_F64)) + 1e-300
    q_rows, q_sqn, q_res, q_nrm = _project(Q[queries], (bounds.centre, bounds.directions,
                                                        bounds.centre_rel))
    chunk = max(1, BLOCK_BYTES // (4 * n))
    products = np.empty((min(chunk, queries.size), n), np.float32)
    candidates = 0
    for s in range(0, queries.size, chunk):
        e = min(queries.size, s + chunk)
        G = products[: e - s]
        np.dot(q_rows[s:e], bounds.rows.T, out=G)
        counts = np.empty(e - s, np.int64)
        args = (G, q_sqn[s:e], q_res[s:e], q_nrm[s:e], bounds.row_sqnorms,
                bounds.row_residuals, bounds.row_norms, bounds.slack_per_norm2, limit)
        run_in_parts(lambda r0, r1: _ks.radius_bound_count(*args, r0, r1, counts), e - s,
                     n_threads)
        starts = np.zeros(e - s + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        xj = np.empty(starts[-1], np.int64)
        candidates += xj.size
        run_in_parts(lambda r0, r1: _ks.radius_bound_fill(*args, r0, r1, starts, xj),
                     e - s, n_threads)
        qi = np.repeat(np.arange(e - s, dtype=np.int64), counts)
        qi = queries[qi + s]
        d2 = np.empty(qi.size, np.float64)
        run_in_parts(lambda p0, p1: _ks.pair_distances(
            Q, index.X, qi, xj, p0, p1, is_int, acc32, _ks.SQEUCLIDEAN, d2), qi.size, n_threads)
        keep = d2 <= r2
        parts.append((qi[keep], xj[keep], np.sqrt(d2[keep]) if metric == "euclidean"
                      else d2[keep]))
    return candidates


def _by_blocks(index, Q, queries, is_int, acc32, radius, n_threads, parts):
    """The neighbours of ``queries`` (query ids) measured against every row
    (Euclidean: GEMM tiles with a proven error, then exact; Manhattan:
    every exact distance). Appends ``(queries, rows, distances)``."""
    metric = index.metric
    X = index.X
    n = index.n_samples
    Qs = Q[queries]
    nq = Qs.shape[0]
    tile = tile_rows(index.n_features)
    qchunk = max(1, BLOCK_BYTES // (8 * min(n, tile)))
    if metric == "manhattan":
        qchunk = max(1, BLOCK_BYTES // (8 * n))
        for s in range(0, nq, qchunk):
            e = min(nq, s + qchunk)
            D = np.empty((e - s, n), np.float64)
            manhattan.distance_rows(Qs[s:e], X, is_int, n_threads, D)
            qi, xj = np.nonzero(D <= radius)
            parts.append((queries[qi + s], xj, D[qi, xj]))
        return
    r2 = _squared_limit(metric, radius)
    err = gemm_error_scale(index.n_features, is_int)
    qn = row_sqnorms(Qs, is_int, n_threads)
    xn = index.xn
    for s in range(0, nq, qchunk):
        e = min(nq, s + qchunk)
        Qf = Qs[s:e].astype(np.float64)
        limit = r2 * (1.0 + RADIUS_SLACK) + err * (qn[s:e, None] + float(xn.max())) + 1e-300
        for j0 in range(0, n, tile):
            j1 = min(n, j0 + tile)
            approx = qn[s:e, None] + xn[None, j0:j1] - 2.0 * (Qf @ X[j0:j1].astype(np.float64).T)
            qi, xj = np.nonzero(approx <= limit)
            qi = queries[qi + s]
            xj = (xj + j0).astype(np.int64)
            d2 = np.empty(qi.size, np.float64)
            run_in_parts(lambda p0, p1: _ks.pair_distances(
                Q, X, qi, xj, p0, p1, is_int, acc32, _ks.SQEUCLIDEAN, d2), qi.size, n_threads)
            keep = d2 <= r2
            parts.append((qi[keep], xj[keep], np.sqrt(d2[keep]) if metric == "euclidean"
                          else d2[keep]))
