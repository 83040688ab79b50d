"""Exact maximum inner product search (``metric='ip'``) against numpy: by
decreasing product, ties to the lower row, every dtype, farthest, filters."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn import NearestNeighborsIndex


def _reference(Q, X, k, farthest=False, rows=None):
    if Q.dtype.kind in "ui" and X.dtype.kind in "ui":
        P = Q.astype(np.int64) @ X.astype(np.int64).T
    else:
        # the exact product's definition: float64 products summed in index
        # order (np.add.accumulate is sequential, np.sum is not)
        P = np.array([[np.add.accumulate(q.astype(np.float64) * x.astype(np.float64))[-1]
                       for x in X] for q in Q]) if Q.size and X.size else np.zeros((len(Q), len(X)))
    P = P.astype(np.float64)
    cols = np.arange(X.shape[0]) if rows is None else rows
    P = P[:, cols]
    key = P if farthest else -P
    order = np.lexsort((np.broadcast_to(cols, P.shape), key), axis=1)[:, :k]
    return np.take_along_axis(P, order, 1), cols[order]


@settings(deadline=None, max_examples=50)
@given(seed=st.integers(0, 2 ** 31), n=st.integers(1, 400), d=st.integers(1, 24),
       nq=st.integers(0, 10), dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       levels=st.sampled_from([2, 3, 256]), farthest=st.booleans())
def test_ip_matches_numpy(seed, n, d, nq, dtype, levels, farthest):
    r = np.random.default_rng(seed)
    X = (r.integers(0, levels, (n, d)) - (levels // 2 if dtype != "uint8" else 0)).astype(dtype)
    Q = (r.integers(0, levels, (nq, d)) - (levels // 2 if dtype != "uint8" else 0)).astype(dtype)
    if dtype.startswith("float"):
        X = (X * r.random((n, d))).astype(dtype)
        Q = (Q * r.random((nq, d))).astype(dtype)
    if n > 2:
        X[n // 2] = X[0]                                        # exact ties
    k = int(r.integers(1, n + 1))
    index = NearestNeighborsIndex(X, metric="ip")
    prod, ind = index.kneighbors(Q, k, farthest=farthest)
    rp, ri = _reference(Q, X, k, farthest)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_array_equal(prod, rp)


def test_ip_filtered_and_checks():
    r = np.random.default_rng(4)
    X = r.normal(size=(500, 16)).astype(np.float32)
    Q = r.normal(size=(20, 16)).astype(np.float32)
    index = NearestNeighborsIndex(X, metric="ip")
    mask = r.random(500) < 0.3
    rows = np.flatnonzero(mask)
    for allowed in (mask, [rows] * 20):
        prod, ind = index.kneighbors(Q, 5, allowed=allowed)
        rp, ri = _reference(Q, X, 5, rows=rows)
        np.testing.assert_array_equal(ind, ri)
        np.testing.assert_array_equal(prod, rp)
    with pytest.raises(ValueError, match="metric='ip'"):
        NearestNeighborsIndex(X, metric="ip", backend="pruned")
    with pytest.raises(ValueError, match="metric='ip'"):
        index.kneighbors(Q, 1, backend="faiss")
    with pytest.raises(ValueError, match="not supported"):
        from fastnn import pairwise_distances
        pairwise_distances(X, metric="ip")
