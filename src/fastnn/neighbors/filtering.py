"""Filtered search: ``NearestNeighborsIndex.kneighbors(Q, k, allowed=...)``.

The answer is always the exact search of the allowed rows, numbered as in
the index, ties to the lower row. Two paths:

* **one set for every query** (a boolean mask or an id array): the allowed
  rows, in index order, become an index of their own (any backend: the
  pruned search's bounds serve a large set, brute force a small one), and
  its answers are mapped back to the index's rows. Row order is kept, so
  ties break as they would in the full index.
* **one set per query** (a sparse matrix or a sequence of id arrays): every
  allowed distance of each query, measured by the same exact functions as
  every backend (``kernels/subset.py``), queries spread over threads. Its
  cost is the number of allowed (query, row) pairs: fast for selective
  filters; a large set per query is not pruned yet.
"""

import numpy as np

from .._threads import resolve_n_jobs, run_in_parts
from .validation import check_k, exact_int32_sums


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
    is_int = bool(index.is_int and q_int)
    if nq:
        from ..kernels import subset as _ks
        X = index.X
        acc32 = exact_int32_sums(Q, X, is_int)
        code = {"manhattan": _ks.MANHATTAN, "ip": _ks.NEG_INNER_PRODUCT}.get(index.metric,
                                                                          _ks.SQEUCLIDEAN)
        sign = -1.0 if farthest else 1.0
        run_in_parts(lambda q0, q1: _ks.topk_of_subsets(Q, X, indptr, indices, q0, q1, sign,
                                                         is_int, acc32, code, dist, ind),
                     nq, resolve_n_jobs(index.n_jobs if n_jobs is None else n_jobs))
    if index.metric == "euclidean":
        np.sqrt(dist, out=dist)
    elif index.metric == "ip":
        np.negative(dist, out=dist)          # (the products, largest first)
    index.stats_ = {"backend": "filtered-exact", "allowed_pairs": int(indices.size)}
    return (dist, ind) if return_distance else ind
