"""scikit-learn's own neighbours tests, run on fastnn's classes; the seven
drop-ins against sklearn on random data (hypothesis); patch_sklearn."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn.neighbors as skn
from hypothesis import given, settings, strategies as st

import fastnn
from fastnn import (KNeighborsClassifier, KNeighborsRegressor, KNeighborsTransformer,
                    NearestNeighbors, RadiusNeighborsClassifier, RadiusNeighborsRegressor,
                    RadiusNeighborsTransformer)

SEVEN = (NearestNeighbors, KNeighborsClassifier, KNeighborsRegressor, KNeighborsTransformer,
         RadiusNeighborsClassifier, RadiusNeighborsRegressor, RadiusNeighborsTransformer)

# scikit-learn's test files for these classes, as installed with it
SKLEARN_TEST_MODULES = ("sklearn.neighbors.tests.test_neighbors",
                        "sklearn.neighbors.tests.test_neighbors_pipeline",
                        "sklearn.neighbors.tests.test_graph")
# ... and the examples in their docstrings
SKLEARN_DOCTEST_MODULES = ("sklearn.neighbors._classification", "sklearn.neighbors._regression",
                           "sklearn.neighbors._unsupervised", "sklearn.neighbors._graph",
                           "sklearn.neighbors._base")


def test_sklearn_neighbors_test_files_pass_on_fastnn(tmp_path):
    """Every test of scikit-learn's neighbours test files passes with
    fastnn's classes in place of sklearn's (``tests/sklearn_suite_plugin``),
    float32 tests included, and fastnn's engine served hundreds of the
    fits (the rest, trees, sparse, other metrics, are sklearn's own code)."""
    report = tmp_path / "served.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), SKLEARN_RUN_FLOAT32_TESTS="1",
               FASTNN_SUITE_REPORT=str(report))
    cmd = [sys.executable, "-m", "pytest", "-p", "sklearn_suite_plugin", "-p", "no:cacheprovider",
           "-q", "-W", "ignore", "-o", "doctest_optionflags=NORMALIZE_WHITESPACE ELLIPSIS NUMBER",
           "--doctest-modules", "--pyargs", *SKLEARN_TEST_MODULES, *SKLEARN_DOCTEST_MODULES]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail
    summary = re.search(r"(\d+) passed", tail)
    assert summary and int(summary.group(1)) > 900, tail
    assert not re.search(r"\d+ (failed|error)", tail), tail
    served = json.loads(report.read_text())
    assert served["fastnn"] > 500, served


def test_the_seven_are_sklearns_classes():
    for cls in SEVEN:
        sk_class = getattr(skn, cls.__name__)
        assert issubclass(cls, sk_class)
        assert set(cls().get_params()) == set(sk_class().get_params()) | {"backend"}


def test_patch_sklearn_and_back():
    original = skn.KNeighborsClassifier
    try:
        assert fastnn.patch_sklearn() == fastnn.patching.PATCHED_NAMES
        from sklearn.neighbors import KNeighborsClassifier as Patched
        assert Patched is KNeighborsClassifier and fastnn.patching.is_patched()
        fastnn.patch_sklearn()                          # twice: harmless
    finally:
        fastnn.unpatch_sklearn()
    assert skn.KNeighborsClassifier is original and not fastnn.patching.is_patched()
    with pytest.raises(ValueError, match="does not provide"):
        fastnn.patch_sklearn(["KDTree"])


def _case(seed, n, d, nq, levels, dtype):
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    X[n // 2] = X[0]                                  # a duplicate: zero distances
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    return r, X, Q


def _radius_from(X, Q, metric, pick):
    X, Q = X.astype(np.float64), Q.astype(np.float64)
    D = skn.NearestNeighbors(algorithm="brute", metric=metric).fit(X).kneighbors(Q, len(X))[0]
    return float(np.quantile(D, pick))                # a distance of the data: the boundary


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(3, 90), d=st.integers(1, 24),
       nq=st.integers(1, 12), dtype=st.sampled_from(["uint8", "float32", "float64"]),
       metric=st.sampled_from(["euclidean", "manhattan", "sqeuclidean"]),
       weights=st.sampled_from(["uniform", "distance"]), outputs=st.integers(0, 2),
       outlier=st.sampled_from([None, "most_frequent", 0]), pick=st.floats(0, 1))
def test_radius_classifier_equals_sklearn(seed, n, d, nq, dtype, metric, weights, outputs,
                                          outlier, pick):
    """RadiusNeighborsClassifier: the same probabilities and labels as
    sklearn's (outliers, several outputs, radii on the boundary), or the
    same error where a query has no neighbour and no outlier label. (The
    reference runs on the data as float64, where sklearn's distances of
    integer values are exact.)"""
    r, X, Q = _case(seed, n, d, nq, 5, dtype)
    y = r.integers(0, 3, n) if outputs < 2 else r.integers(0, 3, (n, outputs))
    radius = _radius_from(X, Q, metric, pick)
    kw = dict(radius=radius, weights=weights, metric=metric, outlier_label=outlier,
              algorithm="brute")
    ours = RadiusNeighborsClassifier(**kw).fit(X, y)
    ref = skn.RadiusNeighborsClassifier(**kw).fit(X.astype(np.float64), y)
    assert ours.engine_ == "fastnn"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want_p, want = ref.predict_proba(Q.astype(np.float64)), ref.predict(Q.astype(np.float64))
    except ValueError as err:
        with pytest.raises(ValueError, match=re.escape(str(err)[:40])):
            ours.predict(Q)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got_p, got = ours.predict_proba(Q), ours.predict(Q)
    # (queries with no neighbour: sklearn's RadiusNeighborsClassMode, its path
    # for float data with uniform weights, gives them other probabilities
    # than its generic path, which fastnn follows; labels agree)
    inliers = np.array([len(rows) > 0 for rows in ours.radius_neighbors(Q)[1]])
    for g, w in zip(*(p if outputs == 2 else [p] for p in (got_p, want_p)), strict=True):
        np.testing.assert_allclose(g[inliers], w[inliers], rtol=1e-12, atol=1e-15)
    if outlier is not None or inliers.all():
        np.testing.assert_array_equal(got[~inliers], want[~inliers])
    if weights == "uniform":                          # (distance weights may sum in another order)
        np.testing.assert_array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(3, 90), d=st.integers(1, 24),
       nq=st.integers(1, 12), dtype=st.sampled_from(["uint8", "int16", "float64"]),
       metric=st.sampled_from(["euclidean", "manhattan"]),
       mode=st.sampled_from(["distance", "connectivity"]), pick=st.floats(0, 1))
def test_radius_transformer_equals_sklearn(seed, n, d, nq, dtype, metric, mode, pick):
    """RadiusNeighborsTransformer: the same graph as sklearn's, entry for
    entry, on integer-valued data (bit-identical distances)."""
    _, X, Q = _case(seed, n, d, nq, 6, dtype)
    radius = _radius_from(X, Q, metric, pick)
    kw = dict(radius=radius, metric=metric, mode=mode, algorithm="brute")
    ours = RadiusNeighborsTransformer(**kw).fit(X)
    assert ours.engine_ == "fastnn"
    got = ours.transform(Q)
    want = skn.RadiusNeighborsTransformer(**kw).fit(X).transform(Q)
    np.testing.assert_array_equal(got.toarray(), want.toarray())
    np.testing.assert_array_equal(got.indptr, want.indptr)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(8, 120), d=st.integers(16, 40),
       nq=st.integers(1, 12), k=st.integers(1, 7), dtype=st.sampled_from(["float32", "float64"]),
       metric=st.sampled_from(["euclidean", "manhattan", "sqeuclidean"]),
       weights=st.sampled_from(["uniform", "distance"]), outputs=st.integers(0, 2))
def test_kneighbors_classes_equal_sklearn(seed, n, d, nq, k, dtype, metric, weights, outputs):
    """The k-NN classifier, regressor and transformer on continuous data
    (no distance ties), sklearn's 'auto' algorithm choosing brute force:
    the same neighbours, predictions and graphs as sklearn."""
    r = np.random.default_rng(seed)
    X, Q = r.normal(size=(n, d)).astype(dtype), r.normal(size=(nq, d)).astype(dtype)
    yc = r.integers(0, 3, n) if outputs < 2 else r.integers(0, 3, (n, outputs))
    yr = r.normal(size=n) if outputs == 0 else r.normal(size=(n, outputs))
    k = min(k, n)
    kw = dict(n_neighbors=k, metric=metric)
    clf, ref = KNeighborsClassifier(weights=weights, **kw).fit(X, yc), \
        skn.KNeighborsClassifier(weights=weights, **kw).fit(X, yc)
    assert clf.engine_ == "fastnn"
    np.testing.assert_array_equal(clf.kneighbors(Q)[1], ref.kneighbors(Q)[1])
    np.testing.assert_allclose(clf.kneighbors(Q)[0], ref.kneighbors(Q)[0], rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(Q), ref.predict(Q))
    got_p, want_p = clf.predict_proba(Q), ref.predict_proba(Q)
    for g, w in zip(*(p if outputs == 2 else [p] for p in (got_p, want_p)), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5)
    np.testing.assert_allclose(
        KNeighborsRegressor(weights=weights, **kw).fit(X, yr).predict(Q),
        skn.KNeighborsRegressor(weights=weights, **kw).fit(X, yr).predict(Q), rtol=1e-4)
    got = KNeighborsTransformer(**kw).fit(X).transform(Q)
    want = skn.KNeighborsTransformer(**kw).fit(X).transform(Q)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-5)
