import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier as SkKNN
from sklearn.neighbors import KNeighborsTransformer as SkKNT
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from skimage.feature import hog as sk_hog

from fastnn import (HOGKNN, HOGTransformer, KNeighborsClassifier, KNeighborsRegressor,
                    KNeighborsTransformer)


# algorithm="brute": the checks' data has few features, where sklearn's
# 'auto' (and so fastnn) would take a KD-tree and sklearn's own code
@parametrize_with_checks([KNeighborsClassifier(algorithm="brute"),
                          KNeighborsRegressor(algorithm="brute"),
                          KNeighborsTransformer(algorithm="brute")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _data(rng, n=300, d=20, classes=4):
    X = rng.integers(0, 8, (n, d)).astype(np.uint8)   # small range: many exact ties
    y = rng.integers(0, classes, n)
    return X, y


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_predictions_equal_sklearn(weights, k, rng):
    X, y = _data(rng)
    Xt = rng.integers(0, 8, (120, 20)).astype(np.uint8)
    ours = KNeighborsClassifier(k, weights=weights).fit(X, y)
    ref = SkKNN(k, weights=weights, algorithm="brute").fit(X, y)
    d0, i0 = ref.kneighbors(Xt)
    d1, i1 = ours.kneighbors(Xt)
    np.testing.assert_array_equal(d1, d0)      # exact on integers, ties included
    if k == 1:
        # fastnn keeps the lowest index among equal distances (sklearn's
        # argpartition does not promise an order among ties)
        D = ((Xt[:, None, :].astype(np.int64) - X[None].astype(np.int64)) ** 2).sum(-1)
        lowest = np.argmin(D, axis=1)                     # first minimum
        np.testing.assert_array_equal(i1[:, 0], lowest)
        np.testing.assert_array_equal(ours.predict(Xt), y[lowest])
    np.testing.assert_allclose(ours.predict_proba(Xt).sum(1), 1.0)


def test_predictions_equal_sklearn_no_ties(rng):
    X = rng.integers(0, 256, (400, 50)).astype(np.uint8)
    y = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, 400)]
    Xt = rng.integers(0, 256, (100, 50)).astype(np.uint8)
    for k in (1, 5):
        for w in ("uniform", "distance"):
            ours = KNeighborsClassifier(k, weights=w).fit(X, y)
            ref = SkKNN(k, weights=w, algorithm="brute").fit(X, y)
            np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
            np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt))


def test_kneighbors_self_exclusion_and_graph(rng):
    X, y = _data(rng, n=80)
    X = np.unique(X, axis=0)
    ours = KNeighborsClassifier(3).fit(X, np.zeros(len(X)))
    ref = SkKNN(3, algorithm="brute").fit(X, np.zeros(len(X)))
    np.testing.assert_array_equal(ours.kneighbors()[0], ref.kneighbors()[0])
    g0 = ref.kneighbors_graph(X, mode="distance").toarray()
    g1 = ours.kneighbors_graph(X, mode="distance").toarray()
    np.testing.assert_array_equal(np.sort(g1, 1), np.sort(g0, 1))


def test_transformer_matches_sklearn(rng):
    X = rng.random((60, 5))
    a = KNeighborsTransformer(n_neighbors=4).fit_transform(X).toarray()
    b = SkKNT(n_neighbors=4).fit_transform(X).toarray()
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_pipeline_gridsearch_clone_pickle(rng):
    X = rng.integers(0, 256, (90, 16, 16)).astype(np.uint8)
    y = rng.integers(0, 3, 90)
    pipe = Pipeline([("hog", HOGTransformer(pixels_per_cell=(4, 4), cells_per_block=(2, 2))),
                     ("knn", KNeighborsClassifier())])
    gs = GridSearchCV(pipe, {"knn__n_neighbors": [1, 3]}, cv=3).fit(X, y)
    assert gs.best_params_["knn__n_neighbors"] in (1, 3)
    scores = cross_val_score(clone(pipe), X, y, cv=3)
    assert scores.shape == (3,)
    m = HOGKNN(1, pixels_per_cell=(4, 4), cells_per_block=(2, 2)).fit(X, y)
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m.predict(X), m2.predict(X))


def test_hog_transformer_flat_rows_and_names(rng):
    X = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    t = HOGTransformer(pixels_per_cell=(4, 4), cells_per_block=(2, 2), image_shape=(16, 16, 3))
    flat = t.fit_transform(X.reshape(5, -1))
    ref = np.stack([sk_hog(i, pixels_per_cell=(4, 4), cells_per_block=(2, 2),
                           channel_axis=-1) for i in X])
    np.testing.assert_array_equal(flat, ref.astype(flat.dtype))
    assert len(t.get_feature_names_out()) == flat.shape[1]
    with pytest.raises(ValueError, match="image_shape"):
        HOGTransformer().fit_transform(X.reshape(5, -1))


def test_hogknn_equals_skimage_sklearn_pipeline(rng):
    Xtr = rng.integers(0, 256, (400, 32, 32, 3)).astype(np.uint8)
    ytr = rng.integers(0, 10, 400)
    Xte = rng.integers(0, 256, (100, 32, 32, 3)).astype(np.uint8)
    yte = rng.integers(0, 10, 100)
    Ftr = np.stack([sk_hog(i, channel_axis=-1) for i in Xtr])
    Fte = np.stack([sk_hog(i, channel_axis=-1) for i in Xte])
    for k in (1, 5):
        ref = SkKNN(k).fit(Ftr, ytr)
        ours = HOGKNN(k, hog_dtype=np.float64).fit(Xtr, ytr)
        np.testing.assert_array_equal(ours.predict(Xte), ref.predict(Fte))
        assert ours.score(Xte, yte) == ref.score(Fte, yte)


def test_bad_input_errors(rng):
    X, y = _data(rng, n=20)
    m = KNeighborsClassifier(3).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :5])
    with pytest.raises(ValueError, match="n_neighbors"):
        KNeighborsClassifier(50).fit(X, y).predict(X)
    with pytest.raises(ValueError):
        KNeighborsClassifier(0).fit(X, y)
    Xn = X.astype(float)
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError):
        KNeighborsClassifier().fit(Xn, y)
    # a metric fastnn does not compute: scikit-learn serves it, its answers
    cheb = KNeighborsClassifier(3, metric="braycurtis").fit(X, y)
    assert cheb.engine_ == "sklearn" and "braycurtis" in cheb.engine_reason_
    np.testing.assert_array_equal(cheb.predict(X),
                                  SkKNN(3, metric="braycurtis").fit(X, y).predict(X))
    # ... and asking for a fastnn backend there is an error, not ignored
    with pytest.raises(ValueError, match="scikit-learn serves this fit"):
        KNeighborsClassifier(metric="braycurtis", backend="pruned").fit(X, y)
    with pytest.raises(ValueError, match="farthest=True needs fastnn"):
        cheb.kneighbors(X, farthest=True)
    with pytest.raises(ValueError, match="backend"):
        KNeighborsClassifier(backend="hnsw").fit(X, y)


@pytest.mark.cifar
def test_hogknn_cifar_subset_equals_reference(cifar):
    xtr, ytr = cifar.x_train[:5000], cifar.y_train[:5000]
    xte, yte = cifar.x_test[:1000], cifar.y_test[:1000]
    Ftr = np.stack([sk_hog(i, channel_axis=-1) for i in xtr])
    Fte = np.stack([sk_hog(i, channel_axis=-1) for i in xte])
    ref = SkKNN(1).fit(Ftr, ytr).predict(Fte)
    ours = HOGKNN(1).fit(xtr, ytr).predict(xte)
    assert (ours == ref).mean() >= 0.999


def test_hog_transformer_set_output_pandas(rng):
    """set_output(transform='pandas'): a DataFrame with the hog feature names,
    from image stacks or from a DataFrame of flat rows (image_shape)."""
    pd = pytest.importorskip("pandas")
    from skimage.feature import hog as sk_hog
    imgs = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    t = HOGTransformer().set_output(transform="pandas")
    df = t.fit_transform(imgs)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(t.get_feature_names_out())
    np.testing.assert_allclose(df.to_numpy(),
                               np.stack([sk_hog(i, channel_axis=-1) for i in imgs]),
                               rtol=1e-6, atol=1e-7)
    flat = pd.DataFrame(imgs.reshape(5, -1))
    t2 = HOGTransformer(image_shape=(32, 32, 3)).set_output(transform="pandas")
    np.testing.assert_array_equal(t2.fit_transform(flat).to_numpy(), df.to_numpy())
    # and back to numpy
    assert isinstance(t.set_output(transform="default").transform(imgs), np.ndarray)


def test_metric_params_are_honoured_as_sklearn():
    """metric_params={'p': 1} overrides p=2 (sklearn's warning included) and
    fastnn serves it, as it serves p = 3 (its Minkowski); a weight vector
    or p < 1 is served by sklearn's own code: the same answers as sklearn,
    never silently Euclidean."""
    import warnings

    from sklearn.neighbors import KNeighborsClassifier as SkKNN
    rng = np.random.default_rng(7)
    X = rng.integers(0, 20, (200, 6))
    y = rng.integers(0, 3, 200)
    Q = rng.integers(0, 20, (60, 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = KNeighborsClassifier(5, metric_params={"p": 1}, algorithm="brute").fit(X, y)
    assert any("metric_params" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SkKNN(5, metric_params={"p": 1}, algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ours.kneighbors(Q)[0], ref.kneighbors(Q)[0])
    assert ours.effective_metric_ == "manhattan" and ours.engine_ == "fastnn"
    p3 = KNeighborsClassifier(5, metric_params={"p": 3}, algorithm="brute").fit(X, y)
    assert p3.engine_ == "fastnn"
    np.testing.assert_allclose(p3.kneighbors(Q)[0], SkKNN(5, p=3, algorithm="brute").fit(X, y)
                               .kneighbors(Q)[0], rtol=1e-13)
    for params in ({"w": np.arange(1.0, 7.0)}, {"p": 0.5}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = KNeighborsClassifier(5, metric_params=params, algorithm="brute").fit(X, y)
            ref = SkKNN(5, metric_params=params, algorithm="brute").fit(X, y)
        assert ours.engine_ == "sklearn"
        np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
        np.testing.assert_array_equal(ours.kneighbors(Q)[0], ref.kneighbors(Q)[0])


def test_callable_weights_all_zero_raise_as_sklearn():
    from sklearn.neighbors import KNeighborsClassifier as SkKNN
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    zero = lambda d: np.zeros_like(d)  # noqa: E731
    with pytest.raises(ValueError) as sk_err:
        SkKNN(3, weights=zero).fit(X, y).predict(X[:5])
    with pytest.raises(ValueError) as our_err:
        KNeighborsClassifier(3, weights=zero).fit(X, y).predict(X[:5])
    assert str(our_err.value) == str(sk_err.value)


@pytest.mark.parametrize("weights", ["uniform", "distance", lambda d: 1.0 / (1.0 + d)])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("metric", ["minkowski", "manhattan"])
def test_regressor_equals_sklearn(weights, outputs, metric):
    """Continuous data (no distance ties): the same predictions as sklearn's
    KNeighborsRegressor, one or several outputs, every weighting."""
    from sklearn.neighbors import KNeighborsRegressor as SkKNR
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 12))
    y = rng.normal(size=(400, outputs)) if outputs > 1 else rng.normal(size=400)
    Q = rng.normal(size=(80, 12))
    ours = KNeighborsRegressor(7, weights=weights, metric=metric, algorithm="brute")
    ours = ours.fit(X, y).predict(Q)
    ref = SkKNR(7, weights=weights, metric=metric, algorithm="brute").fit(X, y).predict(Q)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # the training points themselves, "distance" weights with zero distances.
    # The reference is sklearn's kd-tree: its distances, like fastnn's, are
    # exact, so a point's distance to itself is 0. sklearn's brute force uses
    # |x|^2 - 2 x.y + |y|^2, whose self-distances are 0 or ~1e-8 depending on
    # the CPU's BLAS kernel (non-zero with OpenBLAS on AMD Zen 3)
    np.testing.assert_allclose(KNeighborsRegressor(3, weights=weights, algorithm="brute")
                               .fit(X, y).predict(X[:20]),
                               SkKNR(3, weights=weights, algorithm="kd_tree").fit(X, y)
                               .predict(X[:20]), rtol=1e-12, atol=1e-12)
