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
margin; the products are bfloat16 tile products where the CPU's tile
family serves the pruned search, else float32 BLAS); only the pairs it
leaves within the radius are measured.

Results are sklearn's: an object array of index arrays per query, in index
order, or ordered by (distance, index) with ``sort_results``.
"""

from typing import NamedTuple

import numpy as np

from .._threads import blas_threads, run_in_parts
from ..kernels import subset as _ks
from . import manhattan
from .brute import tile_rows
from ..kernels import amx as _amx
from .validation import UNIT_ROUNDOFF_F32, exact_int32_sums, gemm_error_scale, round_up, \
    row_sqnorms

UNIT_ROUNDOFF_F64 = 2.0 ** -53

# float64 bytes of the GEMM block of one query chunk against one index tile
BLOCK_BYTES = 32 << 20
# the projected bounds' blocks, (queries, index rows): their float32
# products stay in L2 between the product and the bound, instead of a
# chunk's whole product matrix going to memory and back. Tile kernels: 32
# queries (their row multiple) x 8,192 rows (1 MiB); float32 BLAS, one
# thread each: 256 x 2,048 (2 MiB; a GEMM of 32 rows runs far below its
# peak). CIFAR HOG RadiusNeighborsClassifier, 10,000 queries: 0.91-0.98 s
# -> 0.68-0.78 s on AMX, 1.76 -> 1.14 s with FASTNN_AMX=0 (docs/sklearn-dropin.md)
RADIUS_TILE_BLOCK = (32, 8192)
RADIUS_BLAS_BLOCK = (256, 2048)
# queries per chunk (bounds the candidate slots)
RADIUS_QUERY_CHUNK = 4096
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
# bfloat16 products (tile kernels): each operand within 2**-9 of its float32
# value, so a product within (2**-8 + 2**-18) |a||b| of the float32 one
# before the float32 accumulation; flushed subnormal terms add at most 1e-30
BF16_PRODUCT_ERROR = 2.0 ** -8 + 2.0 ** -18
BF16_FLUSH_ERROR = 1e-30
# projected values beyond this magnitude would overflow float32 products:
# such data is measured against every row instead
PROJECTION_MAX_VALUE = 1e18


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
    if metric not in ("euclidean", "sqeuclidean", "manhattan", "cosine", "chebyshev",
                      "minkowski"):
        raise ValueError(f"radius search serves the Euclidean, Manhattan, cosine, Chebyshev "
                         f"and Minkowski metrics, not metric={metric!r}")
    nq = Q.shape[0]
    acc32 = exact_int32_sums(Q, index.X, is_int)
    parts = []
    every = np.arange(nq, dtype=np.int64)
    projected = _uses_projection(index, nq)
    candidates = None
    if metric == "cosine":
        from .cosine import radius_pairs
        parts.append(radius_pairs(index, Q, is_int, radius, n_threads))
    elif metric in ("chebyshev", "minkowski"):
        from .lp import radius_pairs
        parts.append(radius_pairs(index, Q, radius, n_threads))
    elif projected:
        candidates = _by_projection(index, Q, every, is_int, acc32, radius, n_threads, parts)
        projected = candidates is not None
    if metric in ("euclidean", "sqeuclidean", "manhattan") and not projected:
        _by_blocks(index, Q, every, is_int, acc32, radius, n_threads, parts)
    qi = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    xj = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    d = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    # per query: index order, or (distance, index) order (the pairs of one
    # projection come in query order and index order already: no sort then)
    if sort_results:
        order = np.lexsort((xj, d, qi))
    elif _in_query_and_row_order(qi, xj):
        order = None
    else:
        order = np.lexsort((xj, qi))
    if order is not None:
        qi, xj, d = qi[order], xj[order], d[order]
    xj = xj.astype(np.int64, copy=False)
    ends = np.searchsorted(qi, np.arange(nq + 1)).tolist()
    dist = np.empty(nq, dtype=object)
    ind = np.empty(nq, dtype=object)
    for t in range(nq):
        a, b = ends[t], ends[t + 1]
        dist[t], ind[t] = d[a:b], xj[a:b]
    index.stats_ = {"backend": "radius", "pairs": int(d.size),
                    "stage1": ("cosine-unit-rows" if metric == "cosine" else
                               "every-row" if metric in ("chebyshev", "minkowski") else
                               "projection" if projected else "every-row")}
    if projected and metric != "cosine":
        index.stats_["candidates"] = candidates      # pairs measured exactly
        family = index.built.radius_bounds.tile_family
        index.stats_["products"] = f"{family}-bf16" if family else "blas-float32"
    return dist, ind


def _in_query_and_row_order(qi, xj):
    """Whether the pairs ``(qi, xj)`` are sorted by query, then row."""
    if qi.size < 2:
        return True
    dq = np.diff(qi)
    return bool(np.all((dq > 0) | ((dq == 0) & (np.diff(xj) > 0))))


def _squared_limit(metric, radius):
    """sklearn's test on squared distances: against the rounded square of
    the radius (euclidean), or against the radius (sqeuclidean)."""
    return radius * radius if metric == "euclidean" else radius


class RadiusBounds(NamedTuple):
    """The radius search's projection of the index (``index.built``)."""
    centre: np.ndarray          # (d,) float64: the spectrum's mean
    directions: np.ndarray      # (m, d) float64, orthonormalised
    rows: np.ndarray            # (n_pad, m) float32: P (x - c), zero rows after n
    row_sqnorms: np.ndarray     # (n,) float64: |rows|^2
    row_residuals: np.ndarray   # (n,) float64: |x - c - P^T P (x - c)|
    row_norms: np.ndarray       # (n,) float64: |x - c| plus its rounding allowance
    slack_per_norm2: float      # the bound's margin per (|q - c| + |x - c|)^2
    centre_rel: float           # relative rounding allowance of the centred norms
    tile_family: object         # 'amx' / 'avx512': bfloat16 products, or None: float32
    packed_rows: object         # the rows as the tile kernels' bfloat16 operand, or None


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

    Why the bound of ``kernels.subset.radius_bound_tile`` is a lower bound
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

    ``slack_per_norm2`` sums these, times ``PROJECTION_SLACK_SPARE``. The
    search takes ``(|q'| + max |x'|)^2`` for every row of a query (a larger
    slack: a smaller, still valid lower bound), so the per-pair test is
    ``|b|^2 - 2 a.b + (rho_q - rho_x)^2 <= limit - |a|^2 + slack_q``; the
    float64 evaluation of either side rounds by a few ``u64 (|q'| +
    |x'|)^2``, far inside the float32 terms of the slack."""
    built = index.built
    if built.radius_bounds is False:
        return None
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
        if not np.all(np.abs(rows) <= PROJECTION_MAX_VALUE):
            built.radius_bounds = False                # (float32 would overflow: every row)
            return None
        family = built.tile_family if m % _amx.KB == 0 else None
        # the products' error per |a||b|, halved per (|q'| + |x'|)^2 (below)
        products = (0.6 * m + 2.1) * UNIT_ROUNDOFF_F32
        packed = None
        if family is not None:
            products += 0.51 * BF16_PRODUCT_ERROR + 0.51 * 1.01 * (m + 3) * UNIT_ROUNDOFF_F32
            packed = _amx.pack_b(_amx.to_bf16(rows, m))
        slack = ((products + 3.0 * m * orthonormality + 2.02 * residual_rel)
                 * PROJECTION_SLACK_SPARE)
        n_pad = packed.shape[0] * 16 if packed is not None else round_up(rows.shape[0], 32)
        # padded columns (the tile width) can never be candidates
        pad = n_pad - rows.shape[0]
        sqn, res, nrm = (np.concatenate([a, np.full(pad, v)]) for a, v in
                         ((sqn, np.inf), (res, 0.0), (nrm, 0.0)))
        rows = np.vstack([rows, np.zeros((pad, m), np.float32)])
        built.radius_bounds = RadiusBounds(centre, P, rows, sqn, res, nrm, slack, centre_rel,
                                           family, packed)
    return built.radius_bounds


def _by_projection(index, Q, queries, is_int, acc32, radius, n_threads, parts):
    """Stage 1: the projected lower bound of every (query, row) pair (a
    product over m directions instead of every feature, bounded while it is
    in cache: ``_bound_pass``); stage 2: the exact squared distance of the
    pairs whose bound is within the radius. Appends ``(queries, rows,
    distances)`` in query order, each query's rows in index order, and
    returns the number of candidates (None where the projection cannot
    serve: values beyond float32's range)."""
    metric = index.metric
    r2 = _squared_limit(metric, radius)
    bounds = _radius_bounds(index)
    if bounds is None:
        return None
    q_rows, q_sqn, q_res, q_nrm = _project(Q[queries], (bounds.centre, bounds.directions,
                                                        bounds.centre_rel))
    if not np.all(np.abs(q_rows) <= PROJECTION_MAX_VALUE):
        return None                                    # (float32 would overflow: every row)
    limit = r2 * (1.0 + max(RADIUS_SLACK, 2.0 * index.n_features * UNIT_ROUNDOFF_F64))
    if bounds.packed_rows is not None:
        # bfloat16 flushes subnormal operands: each product term off by at
        # most 2**-126 times the other operand, for both operands
        norm_max = np.sqrt(q_sqn.max()) + np.sqrt(bounds.row_sqnorms[np.isfinite(
            bounds.row_sqnorms)].max(initial=0.0))
        limit += 4.0 * 2.0 ** -126 * np.sqrt(q_rows.shape[1]) * norm_max + BF16_FLUSH_ERROR
    candidates = 0
    slots_per_query = index.pruned_options.radius_candidates
    for s in range(0, queries.size, RADIUS_QUERY_CHUNK):
        e = min(queries.size, s + RADIUS_QUERY_CHUNK)
        # the bound's slack with the largest centred norm of the index: a
        # smaller lower bound than each row's own, so still one
        slack = bounds.slack_per_norm2 * (q_nrm[s:e] + bounds.row_norms.max(initial=0.0)) ** 2
        chunk = _QueryChunk(q_rows[s:e], q_res[s:e], limit - q_sqn[s:e] + slack)
        xj, counts = _candidates(bounds, chunk, slots_per_query, n_threads)
        candidates += xj.size
        qi = np.repeat(np.arange(e - s, dtype=np.int64), counts)
        parts.append(_measured(index, Q, queries[qi + s], xj, is_int, acc32, r2, n_threads))
    return candidates


class _QueryChunk(NamedTuple):
    """Projected queries of one chunk (``_project``) and each one's limit
    of ``|b|^2 - 2 a.b + (rho_q - rho_x)^2`` (``radius_bound_tile``)."""
    rows: np.ndarray
    residuals: np.ndarray
    limits: np.ndarray


def _measured(index, Q, qi, xj, is_int, acc32, r2, n_threads):
    """``(queries, rows, distances)`` of the candidate pairs ``(qi, xj)``
    whose exact squared distance passes sklearn's test (``<= r2``)."""
    d2 = np.empty(qi.size, np.float64)
    run_in_parts(lambda p0, p1: _ks.pair_distances(
        Q, index.X, qi, xj, p0, p1, is_int, acc32, _ks.SQEUCLIDEAN, d2), qi.size, n_threads)
    keep = d2 <= r2
    return qi[keep], xj[keep], np.sqrt(d2[keep]) if index.metric == "euclidean" else d2[keep]


def _candidates(bounds, chunk, slots_per_query, n_threads):
    """``(rows, counts)``: the candidates of the chunk's queries, in query
    order and each query's in index order. One bound pass with
    ``slots_per_query`` slots a query (``PrunedOptions.radius_candidates``),
    then a second with exact room for the queries that had more."""
    nq = chunk.rows.shape[0]
    every = np.arange(nq, dtype=np.int64)
    starts = every * slots_per_query
    room = np.full(nq, slots_per_query, np.int64)
    counts = np.zeros(nq, np.int64)
    slots = np.empty(nq * slots_per_query, np.int64)
    operand = _query_operand(bounds, chunk.rows)
    _bound_pass(bounds, chunk, operand, every, starts, room, counts, slots, n_threads)
    over = np.flatnonzero(counts > slots_per_query)
    if over.size:
        starts[over] = slots.size + np.concatenate(([0], np.cumsum(counts[over])[:-1]))
        room[over] = counts[over]
        counts[over] = 0
        slots = np.concatenate([slots, np.empty(int(room[over].sum()), np.int64)])
        _bound_pass(bounds, chunk, operand, over, starts, room, counts, slots, n_threads)
    # each query's slots starts[i] .. starts[i] + counts[i], in query order
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return slots[first + np.arange(first.size)], counts


def _query_operand(bounds, q_rows):
    """The queries as the product's left operand: bfloat16 bits for the tile
    kernels, else the float32 rows."""
    if bounds.packed_rows is None:
        return np.ascontiguousarray(q_rows, np.float32)
    return _amx.to_bf16(q_rows, q_rows.shape[1])


def _bound_pass(bounds, chunk, operand, which, starts, room, counts, slots, n_threads):
    """The candidates of the queries ``which`` (chunk rows; their ``counts``
    zero): blocks of queries times index rows (``RADIUS_TILE_BLOCK``,
    ``RADIUS_BLAS_BLOCK``), each block's products (bfloat16 tile products,
    or float32 BLAS on one thread each) bounded by ``radius_bound_tile``
    while they are in cache; the query blocks spread over the threads."""
    n_pad = bounds.rows.shape[0]
    tiled = bounds.packed_rows is not None
    qb, width = RADIUS_TILE_BLOCK if tiled else RADIUS_BLAS_BLOCK
    tiles = [(j0, min(n_pad, j0 + width)) for j0 in range(0, n_pad, width)]
    x_stats = [(bounds.row_sqnorms[j0:j1], bounds.row_residuals[j0:j1]) for j0, j1 in tiles]

    def part(b0, b1):
        buf = _amx.aligned(qb * width, np.float32)
        left = np.zeros((qb, operand.shape[1]), operand.dtype)
        for b in range(b0, b1):
            block = which[b * qb:(b + 1) * qb]
            m = block.size
            left[:m] = operand[block]
            left[m:] = 0
            for (j0, j1), (x_sqn, x_res) in zip(tiles, x_stats):
                G = buf[:qb * (j1 - j0)].reshape(qb, j1 - j0)
                if tiled:
                    _amx.gemm(left, bounds.packed_rows, G, j1 - j0, j0, family=bounds.tile_family)
                else:
                    np.dot(left[:m], bounds.rows[j0:j1].T, out=G[:m])
                _ks.radius_bound_tile(G, j0, block, chunk.limits, chunk.residuals, x_sqn, x_res,
                                      starts, room, counts, slots)

    with blas_threads(1):
        run_in_parts(part, -(-which.size // qb), n_threads)


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
            parts.append(_measured(index, Q, queries[qi + s], (xj + j0).astype(np.int64),
                                   is_int, acc32, r2, n_threads))
