"""Manhattan (L1, cityblock) search and distances against a numpy reference,
sklearn and scipy.

Ties: fastnn orders equal distances by index; sklearn's heap-based
``ArgKmin`` does not promise an order among them, so sklearn comparisons
use tie-free data or compare distances only.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import pairwise_distances as sk_pd
from sklearn.neighbors import KNeighborsClassifier as SkKNN, NearestNeighbors

from fastnn import KNeighborsClassifier, NearestNeighborsIndex, kneighbors, pairwise_distances


def _reference(Q, X, k, farthest=False):
    if X.dtype.kind in "ui" and Q.dtype.kind in "ui":
        D = np.abs(Q[:, None, :].astype(np.int64) - X[None].astype(np.int64)).sum(-1)
        D = D.astype(np.float64)
    else:
        D = np.abs(Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)).sum(-1)
    key = -D if farthest else D
    order = np.lexsort((np.broadcast_to(np.arange(X.shape[0]), D.shape), key), axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), order


@settings(max_examples=60)
@given(n=st.integers(1, 80), d=st.integers(1, 30), nq=st.integers(0, 12),
       k_frac=st.floats(0, 1), dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       levels=st.sampled_from([2, 5, 256]), farthest=st.booleans(),
       seed=st.integers(0, 2 ** 31))
def test_kneighbors_matches_reference(n, d, nq, k_frac, dtype, levels, farthest, seed):
    r = np.random.default_rng(seed)
    k = max(1, min(n, int(round(k_frac * n))))
    X = r.integers(0, levels, (n, d)).astype(dtype)
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    if n > 2:
        X[n // 2] = X[0]
    dist, ind = kneighbors(Q, X, k, metric="manhattan", farthest=farthest)
    rd, ri = _reference(Q, X, k, farthest)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", [1, 9, 300, 1200])
@pytest.mark.parametrize("farthest", [False, True])
def test_tiles_threads_chunks_and_large_k(k, farthest, rng):
    """Many index tiles, k beyond the sorted-list limit, any thread count
    and chunk size: the same answer."""
    X = rng.integers(0, 4, (1200, 300)).astype(np.uint8)     # many ties
    Q = np.vstack([X[:3], rng.integers(0, 4, (25, 300)).astype(np.uint8)])
    rd, ri = _reference(Q, X, k, farthest)
    index = NearestNeighborsIndex(X, metric="cityblock")
    for n_jobs, chunk in ((1, None), (2, 7)):
        dist, ind = index.kneighbors(Q, k, farthest=farthest, n_jobs=n_jobs, chunk_size=chunk)
        np.testing.assert_array_equal(ind, ri)
        np.testing.assert_array_equal(dist, rd)


def test_equals_sklearn_on_tie_free_data(rng):
    X = rng.normal(size=(2000, 24))
    Q = rng.normal(size=(150, 24))
    d, i = NearestNeighborsIndex(X, metric="manhattan").kneighbors(Q, 6)
    sd, si = NearestNeighbors(n_neighbors=6, algorithm="brute", metric="manhattan").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(i, si)
    np.testing.assert_array_equal(d, sd)


def test_integer_distances_equal_sklearn_despite_ties(rng):
    X = rng.integers(0, 8, (1500, 40)).astype(np.uint8)
    Q = rng.integers(0, 8, (80, 40)).astype(np.uint8)
    d, _ = kneighbors(Q, X, 10, metric="l1")
    sd, _ = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="manhattan").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(d, sd)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "float64"])
def test_pairwise_equals_sklearn_bitwise(dtype, rng):
    """sklearn's manhattan_distances calls scipy's cdist: float64, sums in
    index order; fastnn's are the same numbers."""
    X = (rng.random((300, 50)) * 255).astype(dtype)
    Y = (rng.random((170, 50)) * 255).astype(dtype)
    for metric in ("manhattan", "cityblock", "l1"):
        got = pairwise_distances(X, Y, metric=metric)
        ref = sk_pd(X, Y, metric=metric)
        assert got.dtype == ref.dtype == np.float64
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(pairwise_distances(X, metric="manhattan"),
                                  sk_pd(X, metric="manhattan"))
    from fastnn import neighbors
    blocks = list(neighbors.pairwise_distances_chunked(X, Y, metric="manhattan", chunk_size=64))
    np.testing.assert_array_equal(np.vstack(blocks), sk_pd(X, Y, metric="manhattan"))


@pytest.mark.parametrize("params", [dict(p=1), dict(metric="manhattan"),
                                    dict(metric="cityblock", weights="distance")])
def test_classifier_equals_sklearn(params, rng):
    X = rng.normal(size=(900, 16))
    y = rng.integers(0, 4, 900)
    Q = rng.normal(size=(200, 16))
    ours = KNeighborsClassifier(7, **params).fit(X, y)
    ref = SkKNN(7, algorithm="brute", **params).fit(X, y)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), rtol=1e-12)
    assert ours.engine_ == "fastnn"


def test_bad_backend_and_metric(rng):
    X = rng.normal(size=(50, 4))
    for backend in ("pruned", "faiss"):
        with pytest.raises(ValueError, match="Euclidean metrics only"):
            NearestNeighborsIndex(X, metric="manhattan", backend=backend)
        with pytest.raises(ValueError, match="Euclidean metrics only"):
            NearestNeighborsIndex(X, metric="manhattan").kneighbors(X, 2, backend=backend)
    with pytest.raises(ValueError, match="not supported"):
        NearestNeighborsIndex(X, metric="braycurtis")
    y = np.arange(50) % 2
    p3 = KNeighborsClassifier(p=3, algorithm="brute").fit(X, y)     # fastnn's Minkowski now
    assert p3.engine_ == "fastnn"
    np.testing.assert_array_equal(p3.predict(X), SkKNN(p=3, algorithm="brute").fit(X, y).predict(X))
