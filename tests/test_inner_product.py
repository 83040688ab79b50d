"""Exact maximum inner product search (``metric='ip'``) against numpy: by
decreasing product, ties to the lower row, every dtype, farthest, filters."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn import NearestNeighborsIndex
from fastnn.neighbors.registry import AUTO_MIN_PAIRS


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


def _low_rank(r, n, d, rank, dtype, levels=3):
    """Rows of a rank-``rank`` integer product (many exact ties in the
    products; the spectrum the pruned search prunes), as ``dtype``."""
    X = r.integers(0, levels, (n, rank)) @ r.integers(0, levels, (rank, d))
    return X.astype(dtype)


def _check_route(index, Q, k, route):
    # a first batch of at least AUTO_MIN_PAIRS query-row pairs lets 'auto'
    # build its pruned state (smaller batches before it take the GEMM route)
    reps = AUTO_MIN_PAIRS // max(1, Q.shape[0] * index.n_samples) + 1
    index.kneighbors(np.tile(Q, (reps, 1)), min(k, index.n_samples))
    prod, ind = index.kneighbors(Q, k)
    assert index.stats_["backend"] == route
    rp, ri = _reference(Q, index.X, k)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_array_equal(prod, rp)
    return index.stats_


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2 ** 31), n=st.integers(512, 1200), d=st.integers(16, 40),
       rank=st.integers(1, 6), dtype=st.sampled_from(["uint8", "float32", "float64"]),
       k=st.integers(1, 64), noise=st.sampled_from([0.0, 1e-3, 0.3]))
def test_pruned_route_matches_numpy(seed, n, d, rank, dtype, k, noise):
    """The Euclidean route (augmented rows, the pruned search) gives the
    exact top products, ties to the lower row: integer data with many equal
    products, duplicated rows, float data with small and large noise."""
    r = np.random.default_rng(seed)
    X = _low_rank(r, n, d, rank, dtype)
    Q = _low_rank(r, 12, d, rank, dtype)
    if dtype != "uint8" and noise:
        X = (X + noise * r.standard_normal(X.shape)).astype(dtype)
        Q = (Q + noise * r.standard_normal(Q.shape)).astype(dtype)
    X[n // 3] = X[0]
    X[n // 2] = X[1]
    Q[0] = 0                                            # a zero query: the first k rows
    stats = _check_route(NearestNeighborsIndex(X, metric="ip"), Q, k, "inner-product-pruned")
    assert stats["inner_backends"][:1] in ((), ("pruned",))     # (() : only the zero query)


def test_pruned_route_choice_and_state():
    """'auto' takes the Euclidean route only where the pruned search serves
    the augmented rows; 'brute', farthest and large k take the GEMM one; add,
    remove and pickling keep the answers."""
    import pickle
    r = np.random.default_rng(7)
    X = _low_rank(r, 2000, 48, 4, "float32") + 0.01 * r.standard_normal((2000, 48),
                                                                          np.float32)
    Q = X[:30] + 0.05 * r.standard_normal((30, 48), np.float32)
    index = NearestNeighborsIndex(X, metric="ip")
    _check_route(index, Q, 5, "inner-product-pruned")
    _check_route(NearestNeighborsIndex(X, metric="ip", backend="brute"), Q, 5, "brute")
    _check_route(index, Q, 300, "brute")
    prod, ind = index.kneighbors(Q, 5, farthest=True)
    assert index.stats_["backend"] == "brute"
    np.testing.assert_array_equal(ind, _reference(Q, X, 5, farthest=True)[1])
    # full-rank Gaussian rows: the pruned search would not prune them
    G = r.standard_normal((2000, 48)).astype(np.float32)
    _check_route(NearestNeighborsIndex(G, metric="ip"), Q, 5, "brute")
    # float64 magnitudes float32 cannot hold (or would hold as subnormals)
    for scale in (1e20, 1e-40):
        _check_route(NearestNeighborsIndex(X.astype(np.float64) * scale, metric="ip"),
                     Q.astype(np.float64) * scale, 5, "brute")
    # queries of extreme norms take the GEMM route inside the Euclidean one
    X64 = X.astype(np.float64)
    Q64 = Q.astype(np.float64)
    Q64[3] *= 1e-150
    Q64[4] *= 1e145
    _check_route(NearestNeighborsIndex(X64, metric="ip"), Q64, 5, "inner-product-pruned")
    # rows added after a search: the augmented rows are rebuilt (a larger norm)
    index.add(3.0 * X[:100])
    big = np.vstack([X, 3.0 * X[:100]])
    prod, ind = index.kneighbors(Q, 5)
    np.testing.assert_array_equal(ind, _reference(Q, big, 5)[1])
    index.remove(ind[:, 0])
    live = np.setdiff1d(np.arange(big.shape[0]), ind[:, 0])
    prod2, ind2 = index.kneighbors(Q, 5)
    np.testing.assert_array_equal(ind2, _reference(Q, big, 5, rows=live)[1])
    again = pickle.loads(pickle.dumps(index))
    # (the augmented rows are not pickled: rebuilt by the first large batch)
    again.kneighbors(np.tile(Q, (AUTO_MIN_PAIRS // (Q.shape[0] * again.n_samples) + 1, 1)), 5)
    np.testing.assert_array_equal(again.kneighbors(Q, 5)[1], ind2)
    assert again.stats_["backend"] == "inner-product-pruned"
