"""Dask: HOG over dask arrays and the sharded exact index, on a LocalCluster
(2 worker processes, loopback only), against the single-machine engine."""

import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")

from fastnn import KNeighborsClassifier, NearestNeighborsIndex, hog  # noqa: E402
from fastnn.distributed import DaskKNeighborsClassifier, ShardedIndex  # noqa: E402
from fastnn.distributed import hog as dask_hog  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_import_fastnn_does_not_import_dask():
    code = "import sys, fastnn; fastnn.hog; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dask_hog_equals_single_machine(client, rng):
    imgs = rng.integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
    lazy = dask_hog(da.from_array(imgs, chunks=(10, 16, 32, 3)), channel_axis=-1)
    assert isinstance(lazy, da.Array) and lazy.shape == (37, 324)
    np.testing.assert_array_equal(lazy.compute(), hog(imgs, channel_axis=-1))
    gray = rng.random((9, 24, 20))
    np.testing.assert_array_equal(
        dask_hog(da.from_array(gray, chunks=4), pixels_per_cell=(4, 4)).compute(),
        hog(gray, pixels_per_cell=(4, 4)))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_sharded_equals_single_machine(client, rng, metric, dtype):
    X = rng.integers(0, 4, (700, 12)).astype(dtype)      # many exact ties
    X[300:350] = X[:50]                                  # duplicates across shards
    Q = rng.integers(0, 4, (60, 12)).astype(dtype)
    single = NearestNeighborsIndex(X, metric=metric)
    sharded = ShardedIndex(da.from_array(X, chunks=(123, 12)), metric=metric)
    for k in (1, 5, 130, 700):
        for farthest in (False, True):
            d1, i1 = single.kneighbors(Q, k, farthest=farthest)
            d2, i2 = sharded.kneighbors(Q, k, farthest=farthest)
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_array_equal(d1, d2)
    # dask queries give lazy dask answers, equal too
    d3, i3 = sharded.kneighbors(da.from_array(Q, chunks=17), 7)
    assert isinstance(i3, da.Array)
    np.testing.assert_array_equal(i3.compute(), single.kneighbors(Q, 7)[1])


def test_sharded_bad_input(client, rng):
    X = rng.random((50, 4))
    idx = ShardedIndex(da.from_array(X, chunks=20))
    with pytest.raises(ValueError, match="n_neighbors"):
        idx.kneighbors(X[:3], 51)
    with pytest.raises(ValueError, match="features"):
        idx.kneighbors(rng.random((3, 5)), 1)
    with pytest.raises(ValueError, match="metric"):
        ShardedIndex(X, metric="cosine")


def test_dask_classifier_equals_single_machine(client, rng):
    X = rng.integers(0, 6, (600, 10)).astype(np.uint8)
    y = rng.choice(np.array(["cat", "dog", "emu"]), 600)
    Q = rng.integers(0, 6, (90, 10)).astype(np.uint8)
    for weights in ("uniform", "distance"):
        ref = KNeighborsClassifier(5, weights=weights, algorithm="brute").fit(X, y)
        assert ref.engine_ == "fastnn"
        dk = DaskKNeighborsClassifier(5, weights=weights).fit(
            da.from_array(X, chunks=(150, 10)), da.from_array(y, chunks=150))
        lazy = dk.predict(da.from_array(Q, chunks=30))
        assert isinstance(lazy, da.Array)
        np.testing.assert_array_equal(lazy.compute(), ref.predict(Q))
        np.testing.assert_array_equal(dk.predict(Q), ref.predict(Q))
        np.testing.assert_allclose(dk.predict_proba(Q), ref.predict_proba(Q), rtol=0, atol=0)
        assert dk.score(Q, ref.predict(Q)) == 1.0


@pytest.mark.cifar
def test_cifar_subset_sharded(client, cifar):
    X = cifar.x_train[:6000].reshape(6000, -1)
    Q = cifar.x_test[:300].reshape(300, -1)
    d1, i1 = NearestNeighborsIndex(X).kneighbors(Q, 3)
    d2, i2 = ShardedIndex(da.from_array(X, chunks=(2000, -1))).kneighbors(Q, 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    feats = dask_hog(da.from_array(cifar.x_test[:200], chunks=(64, 32, 32, 3)), channel_axis=-1)
    np.testing.assert_array_equal(feats.compute(), hog(cifar.x_test[:200], channel_axis=-1))
