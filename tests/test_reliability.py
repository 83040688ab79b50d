"""Reliability: the bad-input matrix of every public entry point, fuzzing
of the search API, and thread safety (8 Python threads at once).
The matrix and its outcomes are written out in docs/reliability.md."""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import (HOGKNN, HOGTransformer, KNeighborsClassifier, NearestNeighborsIndex, hog,
                    kneighbors, pairwise_distances)

RNG = np.random.default_rng(0)
X = RNG.random((20, 8))
Y = np.arange(20) % 3


def _nan():
    a = X.copy()
    a[3, 2] = np.nan
    return a


def _inf():
    a = X.copy()
    a[0, 0] = -np.inf
    return a


BAD_MATRICES = {
    "nan": (_nan(), ValueError, "NaN"),
    "inf": (_inf(), ValueError, "inf"),
    "1-D": (X[0], ValueError, "2D|2-D"),
    "3-D": (X[None], ValueError, "dim|2-D"),
    "empty": (X[:0], ValueError, "empty|0 sample"),
    "object": (X.astype(object), (TypeError, ValueError), "dtype|numeric|object"),
    "complex": (X.astype(complex), (TypeError, ValueError), "omplex"),
    "strings": (np.full((20, 8), "a"), (TypeError, ValueError), "dtype|convert"),
}

ENTRY_POINTS = {
    "kneighbors(query)": lambda a: kneighbors(a, X, 2),
    "kneighbors(index)": lambda a: kneighbors(X[:3], a, 2),
    "NearestNeighborsIndex": lambda a: NearestNeighborsIndex(a),
    "pairwise_distances": lambda a: pairwise_distances(a),
    "KNeighborsClassifier.fit": lambda a: KNeighborsClassifier(1).fit(a, np.arange(len(a)) % 2),
    "KNeighborsClassifier.predict": lambda a: KNeighborsClassifier(1).fit(X, Y).predict(a),
}


@pytest.mark.parametrize("case", list(BAD_MATRICES))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_bad_matrix_inputs(entry, case):
    a, exc, msg = BAD_MATRICES[case]
    if entry == "kneighbors(query)" and case == "empty":
        d, i = ENTRY_POINTS[entry](a)          # no queries: empty answers, as documented
        assert d.shape == i.shape == (0, 2)
        return
    if entry.startswith("KNeighborsClassifier") and case == "object":
        # as sklearn: object arrays holding numbers are converted to float
        from sklearn.neighbors import KNeighborsClassifier as SK
        ours = ENTRY_POINTS[entry](a)
        if entry.endswith("predict"):
            np.testing.assert_array_equal(ours, SK(1).fit(X, Y).predict(a))
        return
    with pytest.raises(exc, match=msg):
        ENTRY_POINTS[entry](a)


def _memmap_ro(tmp_path, arr):
    path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.npy"
    np.save(path, arr)
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("variant", ["big-endian", "fortran", "strided", "read-only memmap"])
def test_layout_variants_give_the_same_answers(variant, tmp_path):
    def make(a):
        if variant == "big-endian":
            return a.astype(a.dtype.newbyteorder(">"))
        if variant == "fortran":
            return np.asfortranarray(a)
        if variant == "strided":
            w = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
            w[:, ::2] = a
            return w[:, ::2]
        return _memmap_ro(tmp_path, a)
    Xv = make(X)
    d0, i0 = kneighbors(X[:5], X, 3)
    d1, i1 = kneighbors(make(X[:5]), Xv, 3)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)
    np.testing.assert_array_equal(pairwise_distances(Xv), pairwise_distances(X))
    np.testing.assert_array_equal(KNeighborsClassifier(1).fit(Xv, Y).predict(make(X)),
                                  KNeighborsClassifier(1).fit(X, Y).predict(X))
    imgs = RNG.integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(hog(make(imgs.reshape(3, -1)).reshape(3, 32, 32, 3)
                                      if variant != "read-only memmap" else
                                      _memmap_ro(tmp_path, imgs), channel_axis=-1),
                                  hog(imgs, channel_axis=-1))


def test_long_double_data_is_searched_as_float64():
    # (numba has no long double: such data go to float64, as float16 go to float32)
    d0, i0 = kneighbors(X[:5], X, 3)
    d1, i1 = kneighbors(X[:5].astype(np.longdouble), X.astype(np.longdouble), 3)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)


@given(n=st.integers(0, 60), dtype=st.sampled_from([np.float32, np.float64]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf, -0.0, 5e-324, -1e-40, -3e38]),
       seed=st.integers(0, 2 ** 16), threads=st.integers(1, 3))
def test_magnitude_pass_equals_numpy(n, dtype, special, seed, threads):
    """The validation's one pass over the bits (blocks of 7 values here)
    gives numpy's largest magnitude, and infinity exactly when numpy finds a
    NaN or an infinity."""
    from fastnn.neighbors.validation import abs_max
    r = np.random.default_rng(seed)
    a = (r.standard_normal((n, 3)) * 10.0 ** r.integers(-30, 30, (n, 3))).astype(dtype)
    if special is not None and n:
        with np.errstate(over="ignore"):
            a[r.integers(n), r.integers(3)] = dtype(special)
    got = abs_max(a, threads, block=7)
    if not np.isfinite(a).all():
        assert got == np.inf
    else:
        assert got == (float(np.abs(a).max()) if a.size else 0.0)


@pytest.mark.parametrize("k,exc,msg", [(0, ValueError, "n_neighbors > 0"),
                                       (21, ValueError, "n_neighbors <= n_samples_fit"),
                                       (1.5, TypeError, "integer"),
                                       (True, TypeError, "integer")])
def test_bad_k(k, exc, msg):
    with pytest.raises(exc, match=msg):
        kneighbors(X, X, k)


def test_feature_count_mismatch():
    with pytest.raises(ValueError, match="features"):
        KNeighborsClassifier(1).fit(X, Y).predict(X[:, :5])
    with pytest.raises(ValueError, match="features"):
        NearestNeighborsIndex(X).kneighbors(X[:, :5])


def test_labels():
    with pytest.raises(ValueError, match="NaN"):
        KNeighborsClassifier(1).fit(X, np.full(20, np.nan))
    with pytest.raises(ValueError, match="Unknown label type|label"):
        KNeighborsClassifier(1).fit(X, X[:, 0])            # continuous target
    # mixed str/int in a list become strings, as in sklearn
    from sklearn.neighbors import KNeighborsClassifier as SK
    mixed = [1, "a"] * 10
    np.testing.assert_array_equal(KNeighborsClassifier(1).fit(X, mixed).predict(X),
                                  SK(1).fit(X, mixed).predict(X))


BAD_IMAGES = {
    "nan": (np.full((2, 32, 32), np.nan), ValueError, "NaN"),
    "inf": (np.full((2, 32, 32), np.inf), ValueError, "NaN or inf"),
    "zero-size": (np.zeros((2, 0, 32)), ValueError, "zero-size|too small"),
    "empty batch": (np.zeros((0, 32, 32)), ValueError, "empty"),
    "smaller than a block": (np.zeros((2, 16, 16)), ValueError, "too small"),
    "object": (np.zeros((2, 32, 32), object), TypeError, "numeric"),
    "complex": (np.zeros((2, 32, 32), complex), TypeError, "numeric"),
    "bool": (np.zeros((2, 32, 32), bool), TypeError, "bool"),
    "1-D": (np.zeros(10), ValueError, "ndim"),
    "5-D": (np.zeros((1, 2, 32, 32, 3)), ValueError, "ndim"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("entry", ["hog", "HOGTransformer", "HOGKNN"])
def test_bad_images(entry, case):
    a, exc, msg = BAD_IMAGES[case]
    if entry == "hog" and case == "empty batch":
        # numpy's and Dask's convention for the function: an empty result
        # (the estimators still refuse to fit on nothing, as sklearn's)
        assert hog(a).shape == (0, hog(np.zeros((1, 32, 32))).shape[1])
        return
    if entry == "hog":
        fn = lambda: hog(a, channel_axis=-1 if a.ndim == 5 else None)  # noqa: E731
    elif entry == "HOGTransformer":
        fn = lambda: HOGTransformer().fit_transform(a)  # noqa: E731
    else:
        fn = lambda: HOGKNN(1).fit(a, np.arange(len(a)) % 2)  # noqa: E731
    with pytest.raises(exc, match=msg):
        fn()


def test_hogknn_image_shape_mismatch():
    imgs = RNG.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    clf = HOGKNN(1).fit(imgs, np.arange(6) % 2)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        clf.predict(RNG.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8))


# ------------------------------------------------------------------ fuzzing
DTYPES = [np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_,
          np.complex64, object]


@given(n=st.integers(0, 12), d=st.integers(0, 5), nq=st.integers(0, 4),
       k=st.integers(-1, 14), dtype=st.sampled_from(DTYPES), ndim=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2 ** 16))
def test_fuzz_kneighbors(n, d, nq, k, dtype, ndim, seed):
    rng = np.random.default_rng(seed)
    Xf = rng.integers(0, 5, (n, d)).astype(dtype)
    Qf = rng.integers(0, 5, (nq, d)).astype(dtype)
    if ndim == 1:
        Xf = Xf.ravel()
    elif ndim == 3:
        Xf = Xf[None]
    try:
        dist, ind = kneighbors(Qf, Xf, k)
    except (ValueError, TypeError):
        valid = (ndim == 2 and n > 0 and d > 0 and 1 <= k <= n
                 and np.dtype(dtype).kind in "uif")
        assert not valid, "a valid call raised"
        return
    assert ndim == 2 and 1 <= k <= n and np.dtype(dtype).kind in "uif"
    ref = np.sqrt(((Qf[:, None, :].astype(np.float64) - Xf[None].astype(np.float64)) ** 2)
                  .sum(-1))
    for r in range(nq):
        order = np.lexsort((np.arange(n), ref[r]))[:k]
        np.testing.assert_array_equal(ind[r], order)
        np.testing.assert_allclose(dist[r], ref[r][order], rtol=1e-12, atol=0)


# ----------------------------------------------------------- thread safety
def test_eight_threads_share_estimators():
    rng = np.random.default_rng(1)
    Xt = rng.integers(0, 256, (3000, 64)).astype(np.uint8)
    yt = rng.integers(0, 4, 3000)
    Qt = rng.integers(0, 256, (200, 64)).astype(np.uint8)
    imgs = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    clf = KNeighborsClassifier(3).fit(Xt, yt)
    index = NearestNeighborsIndex(Xt)
    expected = {"predict": clf.predict(Qt), "kneighbors": index.kneighbors(Qt, 4)[1],
                "hog": hog(imgs, channel_axis=-1)}
    results, errors = [], []
    barrier = threading.Barrier(8)

    def work(t):
        try:
            barrier.wait()
            for _ in range(3):
                kind = ("predict", "kneighbors", "hog")[(t + _) % 3]
                if kind == "predict":
                    out = clf.predict(Qt)
                elif kind == "kneighbors":
                    out = index.kneighbors(Qt, 4)[1]
                else:
                    out = hog(imgs, channel_axis=-1)
                results.append((kind, out))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert errors == []
    assert len(results) == 24
    for kind, out in results:
        np.testing.assert_array_equal(out, expected[kind])


@given(rows=st.integers(0, 40), cols=st.integers(0, 40), n=st.integers(0, 3),
       channels=st.sampled_from([None, 1, 3]),
       dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.float64, np.bool_,
                              np.complex64]),
       ppc=st.integers(1, 9), cpb=st.integers(1, 4),
       norm=st.sampled_from(["L1", "L1-sqrt", "L2", "L2-Hys", "L3"]),
       seed=st.integers(0, 2 ** 16))
def test_fuzz_hog(rows, cols, n, channels, dtype, ppc, cpb, norm, seed):
    """Random batches and parameters: skimage's answer per image, or a
    ValueError/TypeError when the input or the parameters are invalid."""
    from skimage.feature import hog as sk_hog
    rng = np.random.default_rng(seed)
    shape = (n, rows, cols) + ((channels,) if channels else ())
    imgs = rng.integers(0, 256, shape).astype(dtype)
    kw = dict(pixels_per_cell=(ppc, ppc), cells_per_block=(cpb, cpb), block_norm=norm,
              channel_axis=-1 if channels else None)
    try:
        out = hog(imgs, **kw)
    except (ValueError, TypeError):
        ok_dtype = np.dtype(dtype).kind in "uif"
        fits = rows // ppc >= cpb and cols // ppc >= cpb
        assert not (ok_dtype and fits and norm != "L3"), "a valid call raised"
        return
    assert np.dtype(dtype).kind in "uif" and norm != "L3"
    assert out.shape[0] == n            # (an empty batch gives an empty result)
    for t in range(n):
        np.testing.assert_allclose(out[t], sk_hog(imgs[t], **kw), rtol=1e-6, atol=1e-7)
