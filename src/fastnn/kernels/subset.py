"""Exact top-k of each query over its own allowed rows (filtered search with
a different allowed set per query): every allowed distance, measured by the
same exact functions as every other backend, sorted by (distance, row)."""

import numpy as np
from numba import njit

from .distances import _prefetch_row, sqdist, sqdist_float, topk_insert
from .dot import dot_exact
from .manhattan import l1dist
from .pruned import _squared_reach

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
def allowed_marks(indptr, indices, query_rows, cand, p0, p1, out):
    """``out[t, c]``: whether row ``cand[t, c]`` is among the sorted allowed
    rows ``indices[indptr[i]:indptr[i + 1]]`` of query ``i = query_rows[t]``
    (a binary search each), for lists ``p0 .. p1``."""
    for t in range(p0, p1):
        i = query_rows[t]
        start, stop = indptr[i], indptr[i + 1]
        for c in range(cand.shape[1]):
            j = cand[t, c]
            lo, hi = start, stop
            while lo < hi:
                mid = (lo + hi) >> 1
                if indices[mid] < j:
                    lo = mid + 1
                else:
                    hi = mid
            out[t, c] = lo < stop and indices[lo] == j


# pairs ahead whose index row is prefetched: a query's candidates are
# scattered rows (one miss each, ~100 ns), the distance itself ~25 ns
PAIR_PREFETCH_AHEAD = 4


# pairs per batch of ``pairs_within``: the batch's vector checks first, then
# the exact distances of the pairs they kept, each loop prefetching its rows
# ahead (a batch's kept pair numbers stay in L1)
PAIR_BATCH = 256


@njit(cache=True, nogil=True)
def pairs_within(q_vectors, x_vectors, vector_limits, Q, X, query_ids, query_of_pair,
                 row_of_pair, p0, p1, is_int, acc32, metric_code, limit, out_query, out_row,
                 out_distance, tally):
    """The radius search's candidate pairs ``p0 .. p1`` (chunk query
    ``query_of_pair[t]``, index row ``row_of_pair[t]``) that are neighbours:
    with vectors (``q_vectors`` not empty: the int8 bound's float32 vectors
    per chunk query and per index row), the squared distance of the pair's
    vectors (``sqdist_float``, float64 sums) must lie within
    ``vector_limits[query]`` first; then the exact distance of query row
    ``Q[query_ids[query]]`` and ``X[row]`` (squared Euclidean or Manhattan,
    ``metric_code``) within ``limit``. The neighbours are written from
    position ``p0`` of ``out_*`` (query id, row, distance) in pair order;
    ``tally`` gets how many (``[0]``) and how many pairs were measured
    exactly (``[1]``)."""
    refine = q_vectors.shape[0] > 0
    kept = np.empty(PAIR_BATCH, np.int64)
    out = p0
    measured = 0
    for b0 in range(p0, p1, PAIR_BATCH):
        b1 = min(p1, b0 + PAIR_BATCH)
        n_kept = 0
        if refine:
            for t in range(b0, min(b1, b0 + PAIR_PREFETCH_AHEAD)):
                _prefetch_row(x_vectors, row_of_pair[t])
            for t in range(b0, b1):
                if t + PAIR_PREFETCH_AHEAD < b1:
                    _prefetch_row(x_vectors, row_of_pair[t + PAIR_PREFETCH_AHEAD])
                i = query_of_pair[t]
                if sqdist_float(q_vectors[i], x_vectors[row_of_pair[t]]) <= vector_limits[i]:
                    kept[n_kept] = t
                    n_kept += 1
        else:
            for t in range(b0, b1):
                kept[n_kept] = t
                n_kept += 1
        measured += n_kept
        for u in range(min(n_kept, PAIR_PREFETCH_AHEAD)):
            _prefetch_row(X, row_of_pair[kept[u]])
        for u in range(n_kept):
            if u + PAIR_PREFETCH_AHEAD < n_kept:
                _prefetch_row(X, row_of_pair[kept[u + PAIR_PREFETCH_AHEAD]])
            t = kept[u]
            q = Q[query_ids[query_of_pair[t]]]
            x = X[row_of_pair[t]]
            if metric_code == MANHATTAN:
                d = l1dist(q, x, is_int, acc32)
            else:
                d = sqdist(q, x, is_int, acc32)
            if d <= limit:
                out_query[out] = query_ids[query_of_pair[t]]
                out_row[out] = row_of_pair[t]
                out_distance[out] = d
                out += 1
    tally[0] = out - p0
    tally[1] = measured


# index rows per block of the radius bound passes: fixed-length inner loops
# vectorise (a block's count first, its rows written only when it has one)
BOUND_BLOCK = 64


@njit(cache=True, nogil=True, inline="always")
def _radius_key(row_products, j, rq, x_sqnorm, x_residual):
    """``|b|^2 - 2 a.b + (rho_q - rho_x)^2``: the bound less its query terms."""
    dr = rq - x_residual[j]
    return x_sqnorm[j] - 2.0 * row_products[j] + dr * dr


@njit(cache=True, nogil=True, inline="always")
def _block_hits(row_products, j0, rq, x_sqnorm, x_residual, query_limit):
    """Candidates among rows ``j0 .. j0 + BOUND_BLOCK`` (a fixed-length,
    vectorised loop)."""
    hits = 0
    for j in range(j0, j0 + BOUND_BLOCK):
        hits += 1 if _radius_key(row_products, j, rq, x_sqnorm, x_residual) <= query_limit else 0
    return hits


@njit(cache=True, nogil=True)
def radius_bound_tile(products, first_row, queries, q_limit, q_residual, x_sqnorm, x_residual,
                      starts, capacity, counts, row_out):
    """The radius search's candidates in one tile of index rows:
    ``products[b, t]`` is the product of the projected (centred) query
    ``queries[b]`` and index row ``first_row + t`` (bfloat16 tiles or
    float32; ``x_*`` hold the tile's rows). A row is a candidate when the
    lower bound of its squared distance

        |a|^2 + |b|^2 - 2 a.b + (rho_q - rho_x)^2 - slack

    (projected norms, residual norms; ``neighbors/radius.py`` proves it) is
    within the limit, i.e. ``|b|^2 - 2 a.b + (rho_q - rho_x)^2 <=
    q_limit[i]`` (the limit less ``|a|^2``, plus the query's slack). The
    candidates, in index order, are appended to query ``i``'s slots
    ``row_out[starts[i]:]`` after the ``counts[i]`` found in earlier tiles,
    at most ``capacity[i]`` in all; ``counts[i]`` counts every one (more
    than the capacity: the caller runs the query again with room). A
    query's tiles come in index order. Candidates are sparse: each block of
    ``BOUND_BLOCK`` index rows is counted first and written only when it
    holds one."""
    n = x_sqnorm.shape[0]
    full = n // BOUND_BLOCK * BOUND_BLOCK
    for b in range(queries.shape[0]):
        i = queries[b]
        rq, lim = q_residual[i], q_limit[i]
        row_products = products[b]
        count = counts[i]
        end = starts[i] + capacity[i]
        out = starts[i] + min(count, capacity[i])
        for j0 in range(0, full, BOUND_BLOCK):
            if _block_hits(row_products, j0, rq, x_sqnorm, x_residual, lim):
                out, count = _write_candidates(row_products, j0, j0 + BOUND_BLOCK, first_row, rq,
                                               x_sqnorm, x_residual, lim, out, end, count,
                                               row_out)
        out, count = _write_candidates(row_products, full, n, first_row, rq, x_sqnorm,
                                       x_residual, lim, out, end, count, row_out)
        counts[i] = count


@njit(cache=True, nogil=True)
def _write_candidates(row_products, j0, j1, first_row, rq, x_sqnorm, x_residual, query_limit,
                      out, end, count, row_out):
    """The candidates among the tile's rows ``j0 .. j1`` appended at ``out``
    (below ``end``) as index rows (``first_row + j``); returns the new
    position and count."""
    for j in range(j0, j1):
        if _radius_key(row_products, j, rq, x_sqnorm, x_residual) <= query_limit:
            if out < end:
                row_out[out] = first_row + j
                out += 1
            count += 1
    return out, count


@njit(cache=True, nogil=True)
def radius_filtered_tile(kept_keys, kept_columns, kept_counts, first_row, n_rows, queries,
                         query_reach, query_slack, row_bound, starts, capacity, counts, row_out):
    """The candidates the fused radius filter kept in one tile
    (``amx.FilterPlan``: block row ``b`` kept ``kept_counts[b]`` columns
    ``kept_columns[b, :kept_counts[b]]`` with their keys ``kept_keys``,
    counted from index row ``first_row``, in column order), appended to
    query ``queries[b]``'s slots as ``radius_bound_tile`` does; columns at
    or beyond ``n_rows`` (the tile padding) are dropped.

    With a bound per index row (``row_bound`` not empty: int8 keys, whose
    filter limit carried the largest rounding bound F of the index), a key
    must also lie within its own row's limit ``(query_reach[i] +
    row_bound[j])^2`` (rounded up) ``+ query_slack[i]``; F is read only for
    keys above the limit of F = 0."""
    own_bounds = row_bound.shape[0] > 0
    for b in range(queries.shape[0]):
        i = queries[b]
        count = counts[i]
        end = starts[i] + capacity[i]
        out = starts[i] + min(count, capacity[i])
        reach = query_reach[i] if own_bounds else 0.0
        slack = query_slack[i] if own_bounds else 0.0
        limit_without_row_bound = _squared_reach(reach, slack)
        for t in range(kept_counts[b]):
            j = first_row + kept_columns[b, t]
            if j >= n_rows:
                continue
            if own_bounds:
                key = kept_keys[b, t]
                if key > limit_without_row_bound and \
                        key > _squared_reach(reach + row_bound[j], slack):
                    continue
            if out < end:
                row_out[out] = j
                out += 1
            count += 1
        counts[i] = count
