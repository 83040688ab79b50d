"""CIFAR-10 test vs train k-NN: fastnn (index build included) vs sklearn vs faiss.

    pytest benchmarks/bench_search.py --benchmark-only -p no:cacheprovider

The ratio column of each group compares minimum times.
"""

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex, hog

# fastnn and faiss: three rounds each (index build included in every one),
# compared by their minimum, the least noisy figure on a shared machine;
# sklearn (a minute a round on raw pixels) runs once
_ROUNDS = 3


def _features(cifar, kind):
    if kind == "raw":
        return (cifar.x_train.reshape(50000, -1), cifar.x_test.reshape(10000, -1))
    return (hog(cifar.x_train, channel_axis=-1, dtype=np.float32),
            hog(cifar.x_test, channel_axis=-1, dtype=np.float32))


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_fastnn(benchmark, cifar, kind, k):
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k{k}"

    def run():
        idx = NearestNeighborsIndex(X)
        out = idx.kneighbors(Q, k)
        benchmark.extra_info.update(idx.stats_)
        return out
    benchmark.pedantic(run, rounds=_ROUNDS, warmup_rounds=1 if k == 1 else 0)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_faiss_flat(benchmark, cifar, kind, k):
    faiss = pytest.importorskip("faiss")
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k{k}"

    def run():
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(np.ascontiguousarray(X, dtype=np.float32))
        return index.search(np.ascontiguousarray(Q, dtype=np.float32), k)
    benchmark.pedantic(run, rounds=_ROUNDS)


@pytest.mark.parametrize("kind", ["hog", "raw"])
def test_sklearn_kneighbors(benchmark, cifar, kind):
    from sklearn.neighbors import NearestNeighbors
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k1"
    benchmark.pedantic(lambda: NearestNeighbors(n_neighbors=1, algorithm="brute")
                       .fit(X).kneighbors(Q), rounds=1)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("impl", ["fastnn", "sklearn"])
def test_pairwise_10k(benchmark, cifar, kind, impl):
    """pairwise_distances of the 10,000 test images (10,000 x 10,000)."""
    from sklearn.metrics import pairwise_distances as sk_pd

    from fastnn import pairwise_distances
    _, Q = _features(cifar, kind)
    benchmark.group = f"pairwise-10k-{kind}"
    fn = pairwise_distances if impl == "fastnn" else sk_pd
    # one untimed full-size round each: the first 800 MB result in a process
    # pays page faults (and transparent-huge-page compaction on this VM) that
    # the implementation running second would otherwise inherit for free
    out = benchmark.pedantic(lambda: fn(Q), rounds=1, warmup_rounds=1)
    assert out.shape == (10000, 10000)


@pytest.mark.parametrize("kind,nq", [("hog", 1000), ("raw", 100)])
@pytest.mark.parametrize("impl", ["fastnn", "sklearn"])
def test_manhattan_1nn(benchmark, cifar, kind, nq, impl):
    """Manhattan 1-NN of the first ``nq`` test images against all 50,000
    (every exact distance; sklearn brute force for reference)."""
    from sklearn.neighbors import NearestNeighbors
    X, Q = _features(cifar, kind)
    Q = Q[:nq]
    benchmark.group = f"manhattan-{kind}-{nq}q"
    if impl == "fastnn":
        NearestNeighborsIndex(X[:500], metric="manhattan").kneighbors(Q[:5], 1)
        fn = lambda: NearestNeighborsIndex(X, metric="manhattan").kneighbors(Q, 1)  # noqa: E731
    else:
        fn = lambda: (NearestNeighbors(n_neighbors=1, algorithm="brute",  # noqa: E731
                                       metric="manhattan").fit(X).kneighbors(Q))
    benchmark.pedantic(fn, rounds=1)
