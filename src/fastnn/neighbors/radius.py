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
comes first: the distance projected on the index's leading principal
directions plus the difference of the residual norms (``_radius_bounds``
proves its margin); only the pairs it leaves within the radius are
measured. Where the pruned search's first stage runs on tile products
(bfloat16 on AMX or with ``kernels='avx512'``; int8 on AVX-512 VNNI,
AVX-VNNI or AVX2) the bound is fused into the tile product: the
directions and the residual as one vector, the pruned search's stage-1
operand, filtered by each query's limit inside the kernel
(``_fused_operand`` proves it); else float32 BLAS products of 128
directions, bounded block by block while in L2 (``radius_bound_tile``).

Results are sklearn's: an object array of index arrays per query, in index
order, or ordered by (distance, index) with ``sort_results``.
"""

from functools import partial
from typing import NamedTuple

import numpy as np

from .._threads import blas_threads, map_threads, run_in_parts
from ..kernels import subset as _ks
from . import manhattan
from .brute import tile_rows
from ..kernels import amx as _amx
from ..kernels import distances as _kd
from .pruned.options import radius_kernels
from .pruned.projection import (INT8_MAX_FEATURES, INT8_PROJECT_TILE_ROWS,
                                int8_directions, int8_reads_in_place, project_int8_tile)
from .pruned.search import bf16_key_slack, int8_key_slack
from .validation import UNIT_ROUNDOFF_F32, exact_int32_sums, gemm_error_scale, round_up, \
    row_sqnorms

UNIT_ROUNDOFF_F64 = 2.0 ** -53

# float64 bytes of the GEMM block of one query chunk against one index tile
BLOCK_BYTES = 32 << 20
# the projected bounds' blocks, (queries, index rows). Tile kernels: 32
# queries (their row multiple) x 8,192 rows, filtered inside the product;
# float32 BLAS, one thread each: 256 x 2,048 (2 MiB of products, bounded
# while in L2; a GEMM of 32 rows runs far below its peak). CIFAR HOG
# RadiusNeighborsClassifier, 10,000 queries, FASTNN_AMX=0: 1.76 -> 1.14 s
# (docs/sklearn-dropin.md)
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
PROJECTION_GEMM_COLUMNS = 32
# relative rounding allowance of centred float64 rows (at least 4 d u64),
# and the factor of room on the bound's proven margin
PROJECTION_CENTRE_REL = 1e-12
PROJECTION_SLACK_SPARE = 2.0
# the fused bound (tile kernels): m directions plus the residual coordinate
# and the six norm and one columns fill the tile kernels' K = 128
FUSED_COMPONENTS = 121
# ... on the int8 filter m directions and the residual coordinate (K = 128)
FUSED_COMPONENTS_INT8 = 127
# ... queries whose scaled norm exceeds this could overflow the float32 key:
# such batches measure every row
FUSED_MAX_QUERY_NORM = 2.0 ** 60
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
        # (BLAS on one thread: a multi-threaded BLAS call leaves OpenBLAS'
        # worker spinning for ~0.1 s, on a core the kernels that follow need;
        # the projection's GEMMs run on the threads, one BLAS thread each)
        with blas_threads(1):
            candidates = _by_projection(index, Q, every, is_int, acc32, radius, n_threads,
                                        parts)
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
        kind = index.built.radius_bounds.fused.kind if family else None
        index.stats_["products"] = (f"{family}-{kind}-filtered" if family else "blas-float32")
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
    rows: np.ndarray            # (n_pad, m) float32: P (x - c), zero rows after n (BLAS path)
    row_sqnorms: np.ndarray     # (n_pad,) float64: |rows|^2, inf after n (BLAS path)
    row_residuals: np.ndarray   # (n_pad,) float64: |x - c - P^T P (x - c)| (BLAS path)
    row_norms: np.ndarray       # (n,) float64: |x - c| plus its rounding allowance
    slack_per_norm2: float      # the bound's margin per (|q - c| + |x - c|)^2
    centre_rel: float           # relative rounding allowance of the centred norms
    tile_family: object         # the fused bound's kernels ('amx' / 'avx512' bf16,
                                # 'avx512' / 'avx2' int8), or None: float32 BLAS
    fused: object               # FusedOperand (tile kernels), or None
    orthonormality: float       # E = max |P P^T - I|
    residual_rel: float         # eta: the residual norms' error per centred norm
    digits: object              # Int8Directions of P (uint8 data on int8 kernels), or None
    int8_family: object         # the kernels of their exact products

    @property
    def kernels(self):
        """``(kind, family)`` of its bound (``pruned.options.radius_kernels``)."""
        return (self.fused.kind if self.fused is not None else None, self.tile_family)


class FusedOperand(NamedTuple):
    """The index side of the fused bound (tile kernels, ``_fused_operand``):
    each row's ``w = (P x', |R x'|)`` times ``scale``, rounded to bfloat16,
    with its norm pieces and ones (``kernels.projection.stage1_rows_index``,
    the pruned search's stage-1 operand), or (``kind='int8'``) as integers
    times a scale per row with their squared norms, scales and shifted sums
    (``stage1_int8_index``). Its product with a query's operand is
    ``|h_q|^2 + |h_x|^2 - 2 h_q.h_x`` of the rounded vectors, filtered
    against each query's limit inside the kernel (``amx.FilterPlan``,
    ``amx.Int8FilterPlan``): only the candidates leave L1."""
    tiles: np.ndarray           # (n_pad / 16, K / 2, 16, 2) uint16, or (.., K / 4, 16, 4) int8
    scale: float                # a power of two: every scaled index vector within norm 1
    error_max: float            # max F: a rounded vector's distance to its exact one (scaled)
    norm_max: float             # max |h|
    width: int                  # K
    kind: str = "bf16"          # 'bf16' or 'int8'
    int8_columns: object = None  # int8: (XN, XS, XC) per packed column
    vectors: object = None      # int8: the float32 vectors W (n, m + 1), checked before
                                #   the exact distance (``_measured``)
    vector_error_max: float = 0.0   # int8: max E1, their distance to the exact ones
    row_bounds: object = None   # int8: (n,) float64 F of each row (the filter's own-row check)


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


def _project(A, fit, n_threads=1, chunk=PROJECTION_CHUNK_ROWS):
    """Rows of ``A`` projected, ``fit = (centre, P, centre_rel)``: float32
    P(a - c), |.|^2 of those float32 values, residual norms
    sqrt(|a - c|^2 - |P(a - c)|^2), centred norms plus their allowance, and
    that allowance (how far the computed centred row may lie from the
    exact one). Chunks of rows spread over ``n_threads`` Python threads,
    BLAS on one thread each (``map_threads``: BLAS' own pool would keep
    spinning into the filter pass that follows); each row's values do not
    depend on the chunking. ``fit`` may add the directions' int8 digits and
    their kernels' family: uint8 rows then project by ``_project_int8``."""
    centre, P, centre_rel = fit[:3]
    digits, family = fit[3:] if len(fit) > 3 else (None, None)
    n, m = A.shape[0], P.shape[0]
    centre_norm = float(np.linalg.norm(centre))
    rows = np.empty((n, m), np.float32)
    sqn, res, nrm, allow = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    if digits is not None and A.dtype == np.uint8:
        _project_int8(A, centre, centre_norm, centre_rel, digits, family, n_threads, rows,
                      sqn, res, nrm, allow)
        return rows, sqn, res, nrm, allow
    # the directions as columns, zero-padded to a multiple of
    # PROJECTION_GEMM_COLUMNS (OpenBLAS' float64 GEMM of 4,096 x 324 rows:
    # 127 columns 6.8 ms, 128 columns 5.3 ms)
    PT = np.zeros((P.shape[1], round_up(m, PROJECTION_GEMM_COLUMNS)))
    PT[:, :m] = P.T

    def work(starts):
        for s in starts:
            e = min(n, s + chunk)
            C = A[s:e].astype(np.float64)
            C -= centre
            a = (C @ PT)[:, :m]
            rows[s:e] = a
            a32 = rows[s:e].astype(np.float64)
            sqn[s:e] = np.einsum("ij,ij->i", a32, a32)
            centred_sq = np.einsum("ij,ij->i", C, C)
            res[s:e] = np.sqrt(np.maximum(0.0, centred_sq - np.einsum("ij,ij->i", a, a)))
            centred = np.sqrt(centred_sq)
            # |a - c| <= |C| + |c|: the rounding of the centred row, within
            # centre_rel of the uncentred norm, is inside this allowance
            allow[s:e] = centre_rel * (centred + 2.0 * centre_norm)
            nrm[s:e] = centred + allow[s:e]
    map_threads(work, list(range(0, n, chunk)), n_threads)
    return rows, sqn, res, nrm, allow


def _project_int8(A, centre, centre_norm, centre_rel, digits, family, n_threads, rows, sqn,
                  res, nrm, allow):
    """``_project`` of uint8 rows whose directions are int8 digits
    (``digits``, ``pruned.projection.int8_directions``) about an integer
    ``centre``: ``a - c`` and ``|a - c|^2`` are exact, ``P (a - c)`` the
    digits' exact integer products combined in at most three float64
    roundings, far inside the float64 GEMM's error the margin allows for
    (``_radius_bounds``). The tiles are the pruned build's
    (``pruned.projection.project_int8_tile``)."""
    n, m = A.shape[0], rows.shape[1]
    step = INT8_PROJECT_TILE_ROWS
    in_place = int8_reads_in_place(A, digits)

    def work(starts):
        Ci = _amx.aligned((step, digits.packed.shape[0] * 16), np.int32)
        Ab = _amx.aligned((step, digits.padded_features), np.uint8, zero=True)
        Z = np.empty((step, m), np.float64)
        c2 = np.empty(step, np.float64)
        for s in starts:
            e = min(n, s + step)
            project_int8_tile(A, s, e, digits, family, in_place, Ab, Ci, 1.0, Z)
            _kd.centred_sqnorms_serial(A[s:e], centre, True, c2[:e - s])
            a = Z[:e - s]
            rows[s:e] = a
            a32 = rows[s:e].astype(np.float64)
            sqn[s:e] = np.einsum("ij,ij->i", a32, a32)
            centred_sq = c2[:e - s]
            res[s:e] = np.sqrt(np.maximum(0.0, centred_sq - np.einsum("ij,ij->i", a, a)))
            centred = np.sqrt(centred_sq)
            allow[s:e] = centre_rel * (centred + 2.0 * centre_norm)
            nrm[s:e] = centred + allow[s:e]
    map_threads(work, list(range(0, n, step)), n_threads)


def _radius_bounds(index, n_threads=1):
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
    * uint8 data on int8 kernels: P is the int8 digits' exact value (its E
      measured as above), the centre an integer; centring and |q'|^2 are
      then exact and P q' is within three float64 roundings, inside every
      term above (``_project_int8``).

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
        spectrum = pruned_backend.spectrum(index, n_threads)
        kind, family = radius_kernels(index.pruned_options.first_stage, index.kernels,
                                      (built.tile_family, built.int8_family))
        m = min({"bf16": FUSED_COMPONENTS, "int8": FUSED_COMPONENTS_INT8}.get(
            kind, PROJECTION_COMPONENTS), spectrum.directions.shape[0])
        P = np.ascontiguousarray(np.linalg.qr(spectrum.directions[:m].T.astype(np.float64))[0].T)
        d = index.n_features
        centre = np.asarray(spectrum.mean, np.float64)
        digits = None
        if (index.X.dtype == np.uint8 and round_up(d, 64) <= INT8_MAX_FEATURES
                and built.int8_family is not None):
            # uint8 rows project by exact integer products: the directions
            # become their int8 digits (orthonormal to E below, which the
            # margin carries), the centre an integer
            centre = np.rint(centre)
            P, digits = int8_directions(P, centre)
        orthonormality = float(np.abs(P @ P.T - np.eye(m)).max())
        centre_rel = max(PROJECTION_CENTRE_REL, 4.0 * d * UNIT_ROUNDOFF_F64)
        residual_rel = np.sqrt(8.0 * (d + m) * UNIT_ROUNDOFF_F64 + 3.0 * m * orthonormality)
        rows, sqn, res, nrm, allow = _project(
            index.X, (centre, P, centre_rel, digits, built.int8_family), n_threads)
        if not np.all(np.abs(rows) <= PROJECTION_MAX_VALUE):
            built.radius_bounds = False                # (float32 would overflow: every row)
            return None
        fused = None
        if family is not None:
            fused = _fused_operand(rows, sqn, res, nrm, allow, residual_rel, d, n_threads, kind)
            rows = sqn = res = None                    # (the BLAS path's)
        else:
            # padded columns (the BLAS blocks' width) can never be candidates
            pad = round_up(rows.shape[0], 32) - rows.shape[0]
            sqn, res, nrm = (np.concatenate([a, np.full(pad, v)]) for a, v in
                             ((sqn, np.inf), (res, 0.0), (nrm, 0.0)))
            rows = np.vstack([rows, np.zeros((pad, m), np.float32)])
        # the products' error per |a||b|, halved per (|q'| + |x'|)^2 (below)
        products = (0.6 * m + 2.1) * UNIT_ROUNDOFF_F32
        slack = ((products + 3.0 * m * orthonormality + 2.02 * residual_rel)
                 * PROJECTION_SLACK_SPARE)
        built.radius_bounds = RadiusBounds(centre, P, rows, sqn, res, nrm, slack, centre_rel,
                                           family, fused, orthonormality, residual_rel,
                                           digits, built.int8_family)
    return built.radius_bounds


def _by_projection(index, Q, queries, is_int, acc32, radius, n_threads, parts):
    """Stage 1: the projected lower bound of every (query, row) pair (a
    product over m directions instead of every feature: filtered inside the
    tile product, ``_filter_pass``, or bounded block by block while in
    cache, ``_bound_pass``); stage 2: the exact squared distance of the
    pairs whose bound is within the radius. Appends ``(queries, rows,
    distances)`` in query order, each query's rows in index order, and
    returns the number of candidates (None where the projection cannot
    serve: values beyond float32's range)."""
    metric = index.metric
    r2 = _squared_limit(metric, radius)
    bounds = _radius_bounds(index, n_threads)
    if bounds is None:
        return None
    q_rows, q_sqn, q_res, q_nrm, q_allow = _project(
        Q[queries], (bounds.centre, bounds.directions, bounds.centre_rel, bounds.digits,
                     bounds.int8_family), n_threads)
    if not np.all(np.abs(q_rows) <= PROJECTION_MAX_VALUE):
        return None                                    # (float32 would overflow: every row)
    limit = r2 * (1.0 + max(RADIUS_SLACK, 2.0 * index.n_features * UNIT_ROUNDOFF_F64))
    fused = bounds.fused
    if fused is not None and not fused.scale * q_nrm.max(initial=0.0) <= FUSED_MAX_QUERY_NORM:
        return None                                    # (a float32 key could overflow)
    candidates = 0
    slots_per_query = index.pruned_options.radius_candidates
    for s in range(0, queries.size, RADIUS_QUERY_CHUNK):
        e = min(queries.size, s + RADIUS_QUERY_CHUNK)
        if fused is not None:
            operand, key_limits = _fused_queries(bounds, q_rows[s:e], q_sqn[s:e], q_res[s:e],
                                                 q_nrm[s:e], q_allow[s:e], limit,
                                                 index.n_features)
            run_pass = partial(_filter_pass, fused, operand, key_limits, bounds.tile_family,
                               index.n_samples, n_threads)
        else:
            # the bound's slack with the largest centred norm of the index: a
            # smaller lower bound than each row's own, so still one
            slack = bounds.slack_per_norm2 * (q_nrm[s:e] + bounds.row_norms.max(initial=0.0)) ** 2
            chunk = _QueryChunk(q_rows[s:e], q_res[s:e], limit - q_sqn[s:e] + slack)
            run_pass = partial(_bound_pass, bounds, chunk, n_threads)
        xj, counts = _candidates(run_pass, e - s, slots_per_query)
        qi = np.repeat(np.arange(e - s, dtype=np.int64), counts)
        # the int8 keys' candidates are checked on the float32 vectors first
        vectors = ((operand[3], fused.vectors, operand[4])
                   if fused is not None and fused.kind == "int8" else None)
        part, measured = _measured(index, Q, queries[s:e], qi, xj, is_int, acc32, r2,
                                   n_threads, vectors)
        candidates += measured
        parts.append(part)
    return candidates


# ``_measured`` without the vectors' check
_NO_VECTORS = (np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), np.zeros(0))


class _QueryChunk(NamedTuple):
    """Projected queries of one chunk (``_project``) and each one's limit
    of ``|b|^2 - 2 a.b + (rho_q - rho_x)^2`` (``radius_bound_tile``)."""
    rows: np.ndarray
    residuals: np.ndarray
    limits: np.ndarray


def _measured(index, Q, query_ids, qi, xj, is_int, acc32, r2, n_threads, vectors=None):
    """``((queries, rows, distances), measured)``: the candidate pairs (query
    ``query_ids[qi]``, row ``xj``) whose exact squared distance passes
    sklearn's test (``<= r2``), in pair order, and how many were measured.
    ``vectors``: the int8 bound's float32 vectors of the chunk's queries and
    of the index rows and each query's limit (``_fused_queries``): a pair is
    measured only when its vectors' squared distance (float64 sums, within
    ``(m + 3) u64`` of ``|W_q - W_x|^2``) is within the limit, which a pair
    within the radius always is (``|W_q - W_x| <= s R_q + E1_q + E1_x``,
    ``_fused_operand``). One pass over the pairs (``pairs_within``), parts
    over the threads."""
    n = qi.size
    out_q, out_x, out_d = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    tallies = {}

    def part(p0, p1):
        tally = np.zeros(2, np.int64)
        _ks.pairs_within(*(vectors or _NO_VECTORS), Q, index.X, query_ids, qi, xj, p0, p1,
                         is_int, acc32, _ks.SQEUCLIDEAN, r2, out_q, out_x, out_d, tally)
        tallies[p0] = tally
    run_in_parts(part, n, n_threads)
    pieces = [(p0, int(t[0])) for p0, t in sorted(tallies.items())]
    found = tuple(np.concatenate([a[p0:p0 + c] for p0, c in pieces]) for a in (out_q, out_x, out_d))
    d = np.sqrt(found[2]) if index.metric == "euclidean" else found[2]
    return (found[0], found[1], d), sum(int(t[1]) for t in tallies.values())


def _candidates(run_pass, nq, slots_per_query):
    """``(rows, counts)``: the candidates of a chunk's ``nq`` queries, in
    query order and each query's in index order. ``run_pass(which, starts,
    room, counts, slots)`` collects those of the queries ``which`` (their
    counts zero) into their slots; one pass with ``slots_per_query`` slots a
    query (``PrunedOptions.radius_candidates``), then a second with exact
    room for the queries that had more."""
    every = np.arange(nq, dtype=np.int64)
    starts = every * slots_per_query
    room = np.full(nq, slots_per_query, np.int64)
    counts = np.zeros(nq, np.int64)
    slots = np.empty(nq * slots_per_query, np.int64)
    run_pass(every, starts, room, counts, slots)
    over = np.flatnonzero(counts > slots_per_query)
    # each query's slots starts[i] .. starts[i] + counts[i], in query order
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    rows = np.take(slots, first + np.arange(first.size), mode="clip")
    if over.size:
        # the queries that had more: their own slots (a second array, not a
        # copy of the first), written over their part of ``rows``
        extra_starts = np.concatenate(([0], np.cumsum(counts[over])[:-1]))
        extra = np.empty(int(counts[over].sum()), np.int64)
        starts[over] = extra_starts
        room[over] = counts[over]
        counts[over] = 0
        run_pass(over, starts, room, counts, extra)
        begins = (np.cumsum(counts) - counts)[over]
        for b, e0, c in zip(begins.tolist(), extra_starts.tolist(), counts[over].tolist()):
            rows[b:b + c] = extra[e0:e0 + c]
    return rows, counts


def _fused_operand(rows, sqnorms, residuals, norms, allowances, residual_rel, n_features,
                   n_threads, kind="bf16"):
    """The index side of the fused bound (``FusedOperand``) from the
    projected rows (``_project``: float32 ``a``, float64 residual norms
    ``rho`` and centred norms with their allowance).

    Why the fused filter drops no neighbour. With ``w(v) = (P v', |R v'|)``
    of the exactly centred ``v'`` and ``_radius_bounds``' first and fourth
    points, ``|q - x|^2 >= |w(q) - w(x)|^2 - 3 m E (|q'| + |x'|)^2``; so a
    pair within the radius has ``|w(q) - w(x)| <= R_q = sqrt(limit + 3 m E
    (|q'| + max |x'|)^2)``. The stored vector ``W`` (float32, times the
    power of two ``s``) lies within ``E1`` of ``s w``:

    * the centring: within the allowance ``nrm - |C|`` of the centred row,
      moved at most 1.01 times that by ``w`` (``P`` orthonormal up to E);
    * the float64 projection: ``2 sqrt(m) (d + 2) u64 nrm``; the residual
      norm: ``eta nrm`` (``_radius_bounds``' fifth point);
    * the float32 rounding: ``1.01 u32 |W|``, plus ``1e-40`` for values
      below float32's normal range.

    ``stage1_rows_index`` adds the bfloat16 rounding (``F = E1 + |W - h|``,
    ``a16 = |h|``; for ``kind='int8'`` ``stage1_int8_index`` the int8 one,
    ``h = s_x v``), and the tile product gives the key ``|h_q - h_x|^2``
    within ``key_slack`` (``_fused_queries``: ``bf16_key_slack`` or
    ``int8_key_slack``). Hence a neighbour's key is at most ``(s R_q + F_q
    + max F_x)^2 + key_slack``, the query's limit (rounded up to
    float32)."""
    from ..kernels import projection as _kproj

    n, m = rows.shape
    norm_max = float(norms.max(initial=0.0))
    scale = float(np.ldexp(1.0, -np.frexp(norm_max * 1.01)[1])) if norm_max > 0 else 1.0
    W, E1 = _scaled_vectors(rows, sqnorms, residuals, norms, allowances, scale, n_features,
                            residual_rel)
    perm = np.arange(n, dtype=np.int64)
    if kind == "int8":
        from .pruned.layout import stage1_int8
        (B8, XN, XS, XC), (F, a8, _) = stage1_int8(W, E1, perm, m, n_threads)
        return FusedOperand(B8, scale, float(F.max(initial=0.0)), float(a8.max(initial=0.0)),
                            B8.shape[1] * 4, "int8", (XN, XS, XC), W,
                            float(E1.max(initial=0.0)), F)
    width = round_up(m + 7, _amx.KB)
    tiles = _amx.aligned((round_up(n, 32) // 16, width // 2, 16, 2), np.uint16, zero=True)
    F = np.empty(n, np.float64)
    a16 = np.empty(n, np.float64)
    bits = W.view(np.uint32)

    def part(p0, p1):
        _kproj.stage1_rows_index(W, bits, E1, perm, p0, p1, np.empty(width, np.uint16), tiles,
                                 F, a16)
    run_in_parts(part, n, n_threads)
    return FusedOperand(tiles, scale, float(F.max(initial=0.0)), float(a16.max(initial=0.0)),
                        width)


def _scaled_vectors(rows, sqnorms, residuals, norms, allowances, scale, n_features,
                    residual_rel):
    """``(W, E1)`` of ``_fused_operand`` for projected rows (``_project``'s
    outputs): the float32 vectors ``scale (a, rho)`` and how far each may
    lie from ``scale * w`` of its exactly centred row (``|W| <= scale (|a|
    + rho)``)."""
    u64, u32 = UNIT_ROUNDOFF_F64, UNIT_ROUNDOFF_F32
    n, m = rows.shape
    W = np.empty((n, m + 1), np.float32)
    W[:, :m] = rows
    W[:, :m] *= np.float32(scale)                    # (a power of two: exact)
    W[:, m] = residuals * scale
    w_norm = scale * (np.sqrt(sqnorms) + residuals) * (1.0 + 1e-6)
    E1 = (scale * (1.01 * allowances + (2.0 * np.sqrt(m) * (n_features + 2) * u64
                                       + residual_rel) * norms)
          + 1.01 * u32 * w_norm + 1e-40)
    return W, E1


def _fused_queries(bounds, q_rows, q_sqn, q_res, q_nrm, q_allow, limit, n_features):
    """A chunk's side of the fused bound: the bfloat16 operand (``-2 h``,
    norm pieces, ones; rows padded to 32), or the int8 one (uint8 rows,
    ``QN``, ``QG``: ``stage1_int8_query``), and each query's float32 key
    limit (``_fused_operand`` proves it; -inf for the padding rows).
    Returns ``(operand, limits)``; an int8 operand is ``(rows, QN, QG, W,
    refine, reach, key_slack)``: the float32 vectors and their limits for
    ``_measured``, and each query's reach ``s R_q + F_q`` and key slack for
    the filter's own-row check (``radius_filtered_tile``)."""
    from ..kernels import projection as _kproj

    fused = bounds.fused
    nq, m = q_rows.shape
    W, E1 = _scaled_vectors(q_rows, q_sqn, q_res, q_nrm, q_allow, fused.scale, n_features,
                            bounds.residual_rel)
    F = np.empty(nq, np.float64)
    a16 = np.empty(nq, np.float64)
    if fused.kind == "int8":
        rows8 = _amx.aligned((round_up(nq, 32), fused.width), np.uint8, zero=True)
        QN = np.zeros(rows8.shape[0], np.float32)
        QG = np.zeros(rows8.shape[0], np.float32)
        _kproj.stage1_int8_query(W, E1, rows8, QN, QG, F, a16, np.empty(nq),
                                 bounds.tile_family == "avx2")
        key_slack = int8_key_slack(a16, fused.norm_max)
    else:
        operand = _amx.aligned((round_up(nq, 32), fused.width), np.uint16, zero=True)
        _kproj.stage1_rows_query(W, W.view(np.uint32), E1, operand, F, a16)
        key_slack = bf16_key_slack(a16, fused.width, fused.norm_max)
    reach = np.sqrt(limit + 3.0 * m * bounds.orthonormality * PROJECTION_SLACK_SPARE
                    * (q_nrm + bounds.row_norms.max(initial=0.0)) ** 2)
    query_reach = fused.scale * reach * (1.0 + 1e-12) + F
    key_limit = (query_reach + fused.error_max) ** 2 * (1.0 + 1e-12) + key_slack
    if fused.kind == "int8":
        # the int8 keys' rounding (~1 % of |w|) lets through twice the
        # candidates of float32 bounds: each is checked again on the float32
        # vectors (m + 1 products in float64, within (m + 3) u64 of
        # |W_q - W_x|^2), far cheaper than its exact distance
        refine = ((fused.scale * reach * (1.0 + 1e-12) + E1 + fused.vector_error_max)
                  * (1.0 + 1e-9)) ** 2
        # the filter's limit carries the largest F of the index (one float32
        # threshold per query); each kept key is checked against its own
        # row's F too (the median F is ~1/3 of the largest on CIFAR HOG)
        operand = (rows8, QN, QG, W, refine, query_reach, np.asarray(key_slack, np.float64))
    limits = np.full(round_up(nq, 32), -np.inf, np.float32)
    limits[:nq] = key_limit
    up = limits[:nq].astype(np.float64) < key_limit
    limits[:nq][up] = np.nextafter(limits[:nq][up], np.float32(np.inf))
    return operand, limits


def _filter_pass(fused, operand, key_limits, family, n, n_threads, which, starts, room, counts,
                 slots):
    """The candidates of the queries ``which`` (chunk rows; their counts
    zero): per block of 32 queries and tile of ``RADIUS_TILE_BLOCK[1]``
    index rows, the tile product filtered by each query's key limit in L1
    (``amx.FilterPlan``), the kept columns appended by
    ``radius_filtered_tile``; the query blocks spread over the threads."""
    qb, width = RADIUS_TILE_BLOCK
    n_pad = fused.tiles.shape[0] * 16
    nq = which.size
    rows = operand[0] if fused.kind == "int8" else operand
    A = np.zeros((round_up(nq, qb), fused.width), rows.dtype)
    A[:nq] = rows[which]
    if fused.kind == "int8":
        QN, QG = (np.zeros(A.shape[0], np.float32) for _ in range(2))
        QN[:nq], QG[:nq] = operand[1][which], operand[2][which]
    T_all = np.full(A.shape[0], -np.inf, np.float32)
    T_all[:nq] = key_limits[which]
    if fused.kind == "int8":
        query_reach, query_slack, row_bounds = operand[5], operand[6], fused.row_bounds
    else:
        query_reach = query_slack = row_bounds = np.zeros(0)
    tiles = [(j0, min(n_pad, j0 + width)) for j0 in range(0, n_pad, width)]

    def part(b0, b1):
        T = np.empty(qb, np.float32)
        OK = np.empty((qb, width), np.float32)
        OJ = np.empty((qb, width), np.int32)
        CNT = np.empty(qb, np.int32)
        if fused.kind == "int8":
            XN, XS, XC = fused.int8_columns
            plan = _amx.Int8FilterPlan(A, fused.tiles, QN, QG, XN, XS, XC, T, OK, OJ, CNT,
                                       family=family)
        else:
            plan = _amx.FilterPlan(A, fused.tiles, T, OK, OJ, CNT, family=family)
        for b in range(b0, b1):
            T[:] = T_all[b * qb:(b + 1) * qb]
            block = which[b * qb:(b + 1) * qb]
            for j0, j1 in tiles:
                plan(b * qb, qb, j0, j1 - j0)
                _ks.radius_filtered_tile(OK, OJ, CNT, j0, n, block, query_reach, query_slack,
                                         row_bounds, starts, room, counts, slots)

    run_in_parts(part, A.shape[0] // qb, n_threads)


def _bound_pass(bounds, chunk, n_threads, which, starts, room, counts, slots):
    """The candidates of the queries ``which`` (chunk rows; their ``counts``
    zero) without tile kernels: blocks of ``RADIUS_BLAS_BLOCK`` queries
    times index rows, each block's float32 products (BLAS, one thread each)
    bounded by ``radius_bound_tile`` while they are in cache; the query
    blocks spread over the threads."""
    n_pad = bounds.rows.shape[0]
    qb, width = RADIUS_BLAS_BLOCK
    tiles = [(j0, min(n_pad, j0 + width)) for j0 in range(0, n_pad, width)]
    x_stats = [(bounds.row_sqnorms[j0:j1], bounds.row_residuals[j0:j1]) for j0, j1 in tiles]
    q_rows = np.ascontiguousarray(chunk.rows, np.float32)

    def part(b0, b1):
        buf = np.empty(qb * width, np.float32)
        for b in range(b0, b1):
            block = which[b * qb:(b + 1) * qb]
            left = q_rows[block]
            for (j0, j1), (x_sqn, x_res) in zip(tiles, x_stats):
                G = buf[:block.size * (j1 - j0)].reshape(block.size, j1 - j0)
                np.dot(left, bounds.rows[j0:j1].T, out=G)
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
            parts.append(_measured(index, Q, queries[s:e], qi.astype(np.int64),
                                   (xj + j0).astype(np.int64), is_int, acc32, r2, n_threads)[0])
