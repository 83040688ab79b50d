"""metric='cosine': the index and the estimators against scikit-learn's
``cosine_distances`` (zero rows, ties, farthest, radius, every backend)."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics.pairwise import cosine_distances
from sklearn.neighbors import KNeighborsClassifier as SkKNN
from sklearn.neighbors import NearestNeighbors as SkNN

from fastnn import KNeighborsClassifier, NearestNeighbors, NearestNeighborsIndex

# our distance and sklearn's are both float64 formulas of the same value
# (a product over norms vs normalised rows' GEMM): within a few u64
TOL = 1e-12


def _data(seed, n, d, nq, levels, dtype, zeros):
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    X[n // 2] = X[0]                                 # duplicates: equal distances
    if zeros:
        X[r.integers(0, n)] = 0                      # distance 1 to everything
        Q[0] = 0
    return X, Q


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 400), d=st.integers(1, 40),
       nq=st.integers(1, 12), k=st.integers(1, 12), levels=st.sampled_from([3, 256]),
       dtype=st.sampled_from(["uint8", "float32", "float64"]), zeros=st.booleans(),
       farthest=st.booleans(), backend=st.sampled_from(["auto", "brute", "pruned", "faiss"]))
def test_kneighbors_are_the_k_best_by_sklearns_distance(seed, n, d, nq, k, levels, dtype, zeros,
                                                        farthest, backend):
    """The k nearest (farthest) rows: their distances are the k smallest
    (largest) of sklearn's cosine_distances, sorted, and each is the
    row's own distance; among equal distances the lower row comes first."""
    X, Q = _data(seed, n, d, nq, levels, dtype, zeros)
    k = min(k, n)
    index = NearestNeighborsIndex(X, metric="cosine", backend=backend)
    dist, ind = index.kneighbors(Q, k, farthest=farthest)
    D = cosine_distances(Q.astype(np.float64), X.astype(np.float64))
    ref = -np.sort(-D, axis=1)[:, :k] if farthest else np.sort(D, axis=1)[:, :k]
    np.testing.assert_allclose(dist, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.take_along_axis(D, ind, axis=1), dist, rtol=0, atol=TOL)
    # ties: the same distance (our exact one) never lists a higher row first
    same = dist[:, 1:] == dist[:, :-1]
    assert np.all(ind[:, 1:][same] > ind[:, :-1][same])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 300), d=st.integers(1, 30),
       nq=st.integers(1, 10), dtype=st.sampled_from(["uint8", "float32", "float64"]),
       zeros=st.booleans(), pick=st.floats(0, 1))
def test_radius_neighbors_equal_sklearn_off_the_boundary(seed, n, d, nq, dtype, zeros, pick):
    """The rows within the radius are sklearn's, except rows whose distance
    lies within float64 rounding of the radius (sklearn rounds them its
    way); distances agree to rounding."""
    X, Q = _data(seed, n, d, nq, 4, dtype, zeros)
    D = cosine_distances(Q.astype(np.float64), X.astype(np.float64))
    radius = float(np.quantile(D, pick))
    dist, ind = NearestNeighborsIndex(X, metric="cosine").radius_neighbors(Q, radius,
                                                                          sort_results=True)
    for t in range(nq):
        clear = np.abs(D[t] - radius) > TOL
        want = np.flatnonzero((D[t] <= radius) & clear)
        got = ind[t][clear[ind[t]]]
        np.testing.assert_array_equal(np.sort(got), want)
        np.testing.assert_allclose(dist[t], D[t, ind[t]], rtol=0, atol=TOL)
        assert np.all(np.diff(dist[t]) >= 0)


def test_estimators_serve_cosine_as_sklearn():
    rng = np.random.default_rng(3)
    X, Q = rng.normal(size=(600, 40)), rng.normal(size=(80, 40))
    y = rng.integers(0, 4, 600)
    for weights in ("uniform", "distance"):
        ours = KNeighborsClassifier(5, metric="cosine", weights=weights).fit(X, y)
        ref = SkKNN(5, metric="cosine", weights=weights).fit(X, y)
        assert ours.engine_ == "fastnn"
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
        np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), atol=1e-12)
        d0, i0 = ref.kneighbors(Q)
        d1, i1 = ours.kneighbors(Q)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_allclose(d1, d0, rtol=0, atol=TOL)
    nn = NearestNeighbors(radius=0.8, metric="cosine").fit(X)
    sk = SkNN(radius=0.8, metric="cosine").fit(X)
    for a, b in zip(nn.radius_neighbors(Q)[1], sk.radius_neighbors(Q)[1]):
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    # X=None: each point leaves itself out, as sklearn
    np.testing.assert_array_equal(nn.kneighbors(None, 3)[1], sk.kneighbors(None, 3)[1])


def test_cosine_index_add_pickle_save_and_errors(tmp_path):
    rng = np.random.default_rng(4)
    X, Q = rng.normal(size=(500, 24)).astype(np.float32), rng.normal(size=(20, 24))
    whole = NearestNeighborsIndex(X, metric="cosine")
    want = whole.kneighbors(Q, 6)
    grown = NearestNeighborsIndex(X[:300], metric="cosine")
    grown.kneighbors(Q, 6)                               # (the unit rows built, then dropped)
    grown.add(X[300:])
    for got in (grown.kneighbors(Q, 6), pickle.loads(pickle.dumps(whole)).kneighbors(Q, 6)):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    whole.save(tmp_path / "cos.index")
    loaded = NearestNeighborsIndex.load(tmp_path / "cos.index")
    assert loaded.metric == "cosine"
    np.testing.assert_array_equal(loaded.kneighbors(Q, 6)[1], want[1])
    with pytest.raises(ValueError, match="allowed= is not supported with metric='cosine'"):
        whole.kneighbors(Q, 2, allowed=np.arange(10))
