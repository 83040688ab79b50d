"""The one top-k accumulator every backend ends with, and the merge of
sorted top-k lists (query chunks of a filtered search, Dask shards).

Every list is ordered by (distance, row) — for the farthest neighbours by
(-distance, row) — so the lowest row wins a tie wherever lists are merged.
"""

from typing import NamedTuple

import numpy as np

from .._threads import run_kernel
from ..kernels import distances as _k
from .validation import gemm_error_scale

# candidates kept per query beyond k before the exact re-rank: approximate
# (GEMM or float32) distances may order near-ties wrongly by a few places
RERANK_EXTRA = 8


class Candidates(NamedTuple):
    """Approximate top lists of a block of queries (``counts[i]`` entries
    of row ``i`` hold ``rows`` and their approximate squared ``distances``)."""
    distances: np.ndarray     # (n_queries, kk) float64
    rows: np.ndarray          # (n_queries, kk) int64
    counts: np.ndarray        # (n_queries,) int64

    @classmethod
    def empty(cls, n_queries, kk):
        return cls(np.empty((n_queries, kk), np.float64), np.empty((n_queries, kk), np.int64),
                   np.zeros(n_queries, np.int64))


def rerank_exact(index, Q, is_int, query_sqnorms, candidates, sign, k, dist, ind, n_threads,
                 error_scale=None, also_scan=None):
    """Exact top-k of each query from its approximate candidates.

    Each candidate is measured exactly; a query whose best left-out
    candidate could still tie or beat its k-th exact distance (by the
    approximation's error, ``error_scale`` times the squared norms) is
    scanned exactly in full, as is every query marked in ``also_scan``
    (candidates known incomplete). Returns how many queries were scanned.
    """
    error_scale = gemm_error_scale(index.n_features, is_int) if error_scale is None \
        else error_scale
    need_scan = np.zeros(Q.shape[0], np.bool_)
    run_kernel(_k.rerank_parallel, _k.rerank_serial, n_threads,
               Q, index.X, candidates.rows, candidates.distances, candidates.counts, sign,
               is_int, error_scale * query_sqnorms, error_scale * float(index.xn.max()), k,
               dist, ind, need_scan)
    rows = np.flatnonzero(need_scan if also_scan is None else need_scan | also_scan)
    if rows.size:
        run_kernel(_k.exact_scan_parallel, _k.exact_scan_serial, n_threads,
                   Q, index.X, rows.astype(np.int64), sign, is_int, dist, ind)
    return int(rows.size)


def merge_sorted(a, b, k, farthest=False):
    """Merge two sorted ``(distances, rows)`` lists of the same queries into
    the first ``k`` by (distance, row) (``farthest``: (-distance, row))."""
    d = np.concatenate([a[0], b[0]], axis=1)
    i = np.concatenate([a[1], b[1]], axis=1)
    order = np.lexsort((i, -d if farthest else d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def exclude_self(dist, ind, self_rows, farthest=False):
    """Lists of k + 1 neighbours of points that are themselves index rows
    (``self_rows[i]`` for list ``i``) without the point itself, k each:
    scikit-learn's rule (``kneighbors(X=None)``): each list drops its own
    row, or, where duplicates at distance 0 pushed it out of the k + 1,
    its first entry (a duplicate of the point). Farthest lists rarely hold
    the point: they drop their last entry then."""
    n, k1 = ind.shape
    keep = ind != np.asarray(self_rows)[:, None]
    keep[:, -1 if farthest else 0][np.all(keep, axis=1)] = False
    return dist[keep].reshape(n, k1 - 1), ind[keep].reshape(n, k1 - 1)
