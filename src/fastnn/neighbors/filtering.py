"""Filtered search: ``NearestNeighborsIndex.kneighbors(Q, k, allowed=...)``.

The answer is always the exact search of the allowed rows, numbered as in
the index, ties to the lower row. Two paths:

* **one set for every query** (a boolean mask or an id array): the allowed
  rows, in index order, become an index of their own (any backend: the
  pruned search's bounds serve a large set, brute force a small one), and
  its answers are mapped back to the index's rows. Row order is kept, so
  ties break as they would in the full index.
* **one set per query** (a sparse matrix or a sequence of id arrays), two
  routes chosen per query:

  - **ranked lists**, for a large set where the index's own search prunes
    (the pruned search, or the inner-product one): the index's exact top
    ``K`` list of the query, ``K`` the power of two at or above
    ``(k + 3 sqrt(k) + 4) n / |allowed|`` (the expected rank of the k-th
    allowed row plus three standard deviations), and its first ``k``
    allowed rows. The list ranks every row of the index, ties to the lower
    row, so those are the exact answer of the subset. A query whose list
    held fewer than ``k`` allowed rows takes a list twice as long, up to
    ``RANKED_MAX_K``, then the other route.
  - **every allowed distance**, for the rest: measured by the same exact
    functions as every backend (``kernels/subset.py``), queries spread over
    threads; its cost is the number of allowed (query, row) pairs (fast for
    selective filters).
"""

import math

import numpy as np

from .._threads import resolve_n_jobs, run_in_parts
from .registry import LARGE_K, SearchRequest, choose
from .validation import check_k, exact_int32_sums

# the longest ranked list a per-query filter takes (the pruned search's
# largest k; CIFAR HOG, 2,000 queries: 0.59 s at K = 256, while measuring
# every allowed distance costs ~0.47 ms a query for 5,000 allowed rows)
RANKED_MAX_K = LARGE_K
# the backends whose lists cost far less than measuring every allowed row
RANKED_BACKENDS = ("pruned", "inner-product-pruned")


def _one_set(allowed, n):
    """Sorted unique row ids from a boolean mask or an id array, or None when
    ``allowed`` is not a single set."""
    if hasattr(allowed, "tocsr") or isinstance(allowed, (list, tuple)):
        return None
    a = np.asarray(allowed)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise ValueError(f"allowed: a boolean mask needs one value per index row "
                             f"({n}), got shape {a.shape}")
        return np.flatnonzero(a)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "ui"):
        raise TypeError(f"allowed: expected a boolean mask, an integer id array, a sparse "
                        f"matrix or a sequence of id arrays; got an array of dtype "
                        f"{a.dtype} and shape {a.shape}")
    return checked_ids(a, n, "allowed")


def checked_ids(a, n, what):
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.ndim != 1 or a.dtype.kind not in "ui":
        raise TypeError(f"{what}: row ids must be a 1-D integer array, got dtype {a.dtype} "
                        f"and shape {a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"{what}: row ids must lie in [0, {n}), got {lo if lo < 0 else hi}")
    return np.unique(a.astype(np.int64))


def without_removed(allowed, removed, nq):
    """``allowed`` less the removed rows (``removed``: a mask, or None), in
    the same form (validated later by the filtered search)."""
    if removed is None:
        return allowed
    live = ~removed
    n = removed.shape[0]
    if hasattr(allowed, "tocsr"):
        A = allowed.tocsr()
        if A.shape[1] != n:
            return A                                     # (the search names the mistake)
        return A.multiply(live[None, :].astype(A.dtype)).tocsr()
    if isinstance(allowed, (list, tuple)):
        if len(allowed) != nq:
            return allowed
        sets = [checked_ids(a, n, f"allowed[{i}]") for i, a in enumerate(allowed)]
        return [ids[live[ids]] for ids in sets]
    ids = _one_set(allowed, n)
    return ids[live[ids]]


def _per_query_sets(allowed, nq, n):
    """CSR arrays ``(indptr, indices)`` of each query's sorted unique ids."""
    if hasattr(allowed, "tocsr"):
        A = allowed.tocsr(copy=True)
        if A.shape != (nq, n):
            raise ValueError(f"allowed: a sparse matrix needs shape (n_queries, n_samples) "
                             f"= {(nq, n)}, got {A.shape}")
        A.eliminate_zeros()
        A.sum_duplicates()
        A.sort_indices()
        return A.indptr.astype(np.int64), A.indices.astype(np.int64)
    if len(allowed) != nq:
        raise ValueError(f"allowed: a sequence of id arrays needs one per query ({nq}), "
                         f"got {len(allowed)}")
    sets = [checked_ids(a, n, f"allowed[{i}]") for i, a in enumerate(allowed)]
    indptr = np.zeros(nq + 1, np.int64)
    np.cumsum([s.size for s in sets], out=indptr[1:])
    indices = np.concatenate(sets) if sets else np.zeros(0, np.int64)
    return indptr, indices


def _check_k(n_neighbors, n, smallest, where):
    """``n_neighbors`` checked as for any search of ``n`` rows, then against
    the ``smallest`` allowed set."""
    k = check_k(n_neighbors, n)
    if k > smallest:
        raise ValueError(f"n_neighbors={k}, but only {smallest} rows are allowed {where}")
    return k


def kneighbors_allowed(index, Q, q_int, n_neighbors, allowed, return_distance, farthest,
                       backend, n_jobs, chunk_size):
    """``index.kneighbors`` restricted to ``allowed`` (see the module)."""
    from .index import NearestNeighborsIndex

    n, nq = index.n_samples, Q.shape[0]
    rows = _one_set(allowed, n)
    if rows is not None:
        k = _check_k(n_neighbors, n, rows.size, "(the allowed set)")
        if rows.size == n:
            return index.kneighbors(Q, k, return_distance, farthest, backend, n_jobs,
                                    chunk_size)
        params = index.build_params()
        if n_jobs is not None:
            params["n_jobs"] = n_jobs
        sub = NearestNeighborsIndex(index.X[rows], **params)
        dist, ind = sub.kneighbors(Q, k, True, farthest, backend, n_jobs, chunk_size)
        index.stats_ = dict(sub.stats_, allowed_rows=int(rows.size))
        ind = rows[ind]
        return (dist, ind) if return_distance else ind

    indptr, indices = _per_query_sets(allowed, nq, n)
    counts = np.diff(indptr)
    k = _check_k(n_neighbors, n, int(counts.min()) if nq else n,
                 f"for query {int(np.argmin(counts))}" if nq else "")
    dist = np.empty((nq, k), np.float64)
    ind = np.empty((nq, k), np.int64)
    n_threads = resolve_n_jobs(index.n_jobs if n_jobs is None else n_jobs)
    rest = _ranked_lists(index, Q, q_int, k, indptr, farthest, backend, n_jobs, chunk_size,
                         n_threads, indices, dist, ind)
    if rest.size:
        _every_allowed_distance(index, Q, q_int, k, indptr, indices, rest, farthest, n_threads,
                                dist, ind)
    index.stats_ = {"backend": "filtered-exact", "allowed_pairs": int(indices.size),
                    "ranked_queries": int(nq - rest.size)}
    return (dist, ind) if return_distance else ind


def _ranked_lists(index, Q, q_int, k, indptr, farthest, backend, n_jobs, chunk_size,
                  n_threads, indices, dist, ind):
    """Fill the queries the ranked-lists route serves (see the module);
    returns the others' numbers."""
    nq, n = Q.shape[0], index.n_samples
    everyone = np.arange(nq, dtype=np.int64)
    if farthest or not nq or index.metric not in ("euclidean", "sqeuclidean", "ip"):
        return everyone
    counts = np.maximum(np.diff(indptr), 1)
    need = np.ceil((k + 3.0 * math.sqrt(k) + 4.0) * n / counts)
    length = np.minimum(n, 2 ** np.ceil(np.log2(np.maximum(need, 16))).astype(np.int64))
    wanted = index.backend if backend is None else backend
    probe = SearchRequest(queries=Q, is_int=bool(index.is_int and q_int), k=min(n, 16),
                          farthest=False, n_threads=n_threads, chunk_size=chunk_size)
    if choose(index, wanted, probe).name not in RANKED_BACKENDS:
        return everyone
    from ..kernels import subset as _ks
    rest = [everyone[length > RANKED_MAX_K]]
    for K in np.unique(length[length <= RANKED_MAX_K]):
        rows = everyone[length == K]
        K = int(K)
        while rows.size:
            request = probe._replace(k=K)
            if K > RANKED_MAX_K or choose(index, wanted, request).name not in RANKED_BACKENDS:
                rest.append(rows)
                break
            d, i = index._kneighbors_all(Q[rows], q_int, K, False, wanted, n_jobs, chunk_size)
            marks = np.empty(i.shape, np.bool_)
            run_in_parts(lambda p0, p1: _ks.allowed_marks(indptr, indices, rows, i, p0, p1,
                                                          marks), rows.size, n_threads)
            done = marks.sum(axis=1) >= k
            # each done list's first k allowed entries, in rank order
            first = np.argsort(~marks[done], axis=1, kind="stable")[:, :k]
            dist[rows[done]] = np.take_along_axis(d[done], first, axis=1)
            ind[rows[done]] = np.take_along_axis(i[done], first, axis=1)
            rows = rows[~done]
            K = min(n, 2 * K) if K < n else RANKED_MAX_K + 1
    return np.sort(np.concatenate(rest))


def _every_allowed_distance(index, Q, q_int, k, indptr, indices, queries, farthest, n_threads,
                            dist, ind):
    """Fill the rows ``queries`` by measuring every allowed distance."""
    from ..kernels import subset as _ks
    X = index.X
    is_int = bool(index.is_int and q_int)
    acc32 = exact_int32_sums(Q, X, is_int)
    code = {"manhattan": _ks.MANHATTAN, "ip": _ks.NEG_INNER_PRODUCT}.get(index.metric,
                                                                      _ks.SQEUCLIDEAN)
    sign = -1.0 if farthest else 1.0
    sub_indptr = np.zeros(queries.size + 1, np.int64)
    np.cumsum(indptr[queries + 1] - indptr[queries], out=sub_indptr[1:])
    sub_indices = (np.concatenate([indices[indptr[q]:indptr[q + 1]] for q in queries])
                   if queries.size < Q.shape[0] else indices)
    sub_Q = Q[queries] if queries.size < Q.shape[0] else Q
    sub_d = np.empty((queries.size, k), np.float64)
    sub_i = np.empty((queries.size, k), np.int64)
    run_in_parts(lambda q0, q1: _ks.topk_of_subsets(sub_Q, X, sub_indptr, sub_indices, q0, q1,
                                                     sign, is_int, acc32, code, sub_d, sub_i),
                 queries.size, n_threads)
    if index.metric == "euclidean":
        np.sqrt(sub_d, out=sub_d)
    elif index.metric == "ip":
        np.negative(sub_d, out=sub_d)          # (the products, largest first)
    dist[queries] = sub_d
    ind[queries] = sub_i
