"""metric='chebyshev' and metric='minkowski' (any p >= 1): the index and
the estimators against scikit-learn's brute force."""

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from sklearn.neighbors import KNeighborsClassifier as SkKNN
from sklearn.neighbors import NearestNeighbors as SkNN

from fastnn import KNeighborsClassifier, NearestNeighbors, NearestNeighborsIndex

# sklearn's formulas in float64, rounded in places of its own
RTOL = 1e-13


def _sk(metric, p, **kw):
    return SkNN(algorithm="brute", metric=metric, **({} if p is None else {"p": p}), **kw)


@settings(max_examples=40, deadline=None)
# (an example where two reduced sums an ulp apart give one distance: the rows
# came in the reduced sums' order, not the lower first)
@example(seed=0, n=64, d=4, nq=10, k=5, levels=3, dtype="uint8", farthest=True,
         metric_p=("minkowski", 1.5))
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 300), d=st.integers(1, 30),
       nq=st.integers(1, 10), k=st.integers(1, 12), levels=st.sampled_from([3, 256]),
       dtype=st.sampled_from(["uint8", "float64"]), farthest=st.booleans(),
       metric_p=st.sampled_from([("chebyshev", None), ("minkowski", 3.0), ("minkowski", 1.5),
                                 ("minkowski", 1.0), ("minkowski", 7.0)]))
def test_kneighbors_equal_sklearns_distances_ties_to_the_lower_row(seed, n, d, nq, k, levels,
                                                                   dtype, farthest, metric_p):
    metric, p = metric_p
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    X[n // 2] = X[0]
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    k = min(k, n)
    dist, ind = NearestNeighborsIndex(X, metric=metric, p=p).kneighbors(Q, k, farthest=farthest)
    D = _sk(metric, p).fit(X.astype(np.float64)).kneighbors(Q.astype(np.float64), n)[0]
    ref = D[:, ::-1][:, :k] if farthest else D[:, :k]
    np.testing.assert_allclose(dist, ref, rtol=RTOL, atol=0)
    # each returned distance is the row's own (recomputed), ties to the lower row
    own = np.array([[np.max(np.abs(Q[i].astype(float) - X[j])) if metric == "chebyshev"
                     else np.sum(np.abs(Q[i].astype(float) - X[j]) ** p) ** (1 / p)
                     for j in ind[i]] for i in range(nq)])
    np.testing.assert_allclose(dist, own, rtol=RTOL, atol=0)
    same = dist[:, 1:] == dist[:, :-1]
    assert np.all(ind[:, 1:][same] > ind[:, :-1][same])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 200), d=st.integers(1, 20),
       nq=st.integers(1, 8), pick=st.floats(0, 1),
       metric_p=st.sampled_from([("chebyshev", None), ("minkowski", 3.0)]))
def test_radius_neighbors_equal_sklearn(seed, n, d, nq, pick, metric_p):
    metric, p = metric_p
    r = np.random.default_rng(seed)
    X = r.integers(0, 5, (n, d)).astype(np.float64)
    Q = r.integers(0, 5, (nq, d)).astype(np.float64)
    ref = _sk(metric, p).fit(X)
    radius = float(np.quantile(ref.kneighbors(Q, n)[0], pick))
    got = NearestNeighborsIndex(X, metric=metric, p=p).radius_neighbors(Q, radius)
    want = ref.radius_neighbors(Q, radius=radius)
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(a, np.sort(b))


def test_estimators_serve_chebyshev_and_minkowski_as_sklearn():
    rng = np.random.default_rng(5)
    X, Q, y = rng.normal(size=(500, 30)), rng.normal(size=(60, 30)), rng.integers(0, 3, 500)
    for params in (dict(metric="chebyshev"), dict(p=3), dict(p=np.inf),
                   dict(metric="minkowski", metric_params={"p": 1.5})):
        ours = KNeighborsClassifier(5, weights="distance", **params).fit(X, y)
        ref = SkKNN(5, weights="distance", **params).fit(X, y)
        assert ours.engine_ == "fastnn", ours.engine_reason_
        np.testing.assert_array_equal(ours.kneighbors(Q)[1], ref.kneighbors(Q)[1])
        np.testing.assert_allclose(ours.kneighbors(Q)[0], ref.kneighbors(Q)[0], rtol=RTOL)
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    nn = NearestNeighbors(radius=2.0, metric="chebyshev").fit(X)
    for a, b in zip(nn.radius_neighbors(Q)[1], SkNN(radius=2.0, metric="chebyshev").fit(X)
                    .radius_neighbors(Q)[1]):
        np.testing.assert_array_equal(a, np.sort(b))
    # p < 1 (not a metric) and weighted minkowski stay sklearn's
    assert KNeighborsClassifier(p=0.5, algorithm="brute").fit(X, y).engine_ == "sklearn"


def test_bad_parameters():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="1 <= p < inf"):
        NearestNeighborsIndex(X, metric="minkowski", p=0.5)
    with pytest.raises(TypeError, match="needs p"):
        NearestNeighborsIndex(X, metric="minkowski")
    with pytest.raises(ValueError, match="takes none"):
        NearestNeighborsIndex(X, metric="euclidean", p=3)
    with pytest.raises(ValueError, match="served by backend='auto' or 'brute'"):
        NearestNeighborsIndex(X, metric="chebyshev", backend="pruned")
    with pytest.raises(ValueError, match="allowed= is not supported with metric='chebyshev'"):
        NearestNeighborsIndex(X, metric="chebyshev").kneighbors(X, 1, allowed=[0, 1])
