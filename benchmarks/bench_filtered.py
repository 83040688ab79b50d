"""Filtered k-NN (one allowed set for all queries): fastnn ``allowed=`` against
faiss flat and faiss HNSW with an ``IDSelectorBatch``, and numpy brute force
on the subset, CIFAR-10 HOG (10,000 test queries, 50,000 training rows),
k = 10, 1 % / 10 % / 50 % of the rows allowed, in one run.

    pytest benchmarks/bench_filtered.py --benchmark-only -p no:cacheprovider \\
        --benchmark-group-by=group --benchmark-columns=min,max,rounds

Every side the minimum of 3 rounds (faiss indexes built once, outside the
timing: the filter changes per call, the index does not); fastnn's time
includes the search of the subset, index build of the subset included.
``extra_info`` holds HNSW's recall@10 against the exact answer. Threads: all
cores (2 here) for every library.
"""

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex, hog

_ROUNDS = 3
K = 10


@pytest.fixture(scope="module")
def data(cifar):
    X = hog(cifar.x_train, channel_axis=-1, dtype=np.float32)
    Q = hog(cifar.x_test, channel_axis=-1, dtype=np.float32)
    return X, Q


def _mask(n, frac):
    return np.random.default_rng(0).random(n) < frac


@pytest.mark.parametrize("frac", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("impl", ["fastnn", "numpy", "faiss-flat", "faiss-hnsw"])
def test_filtered(benchmark, data, frac, impl):
    X, Q = data
    mask = _mask(len(X), frac)
    ids = np.flatnonzero(mask)
    benchmark.group = f"filtered-{int(frac * 100)}pct-k{K}"
    index = NearestNeighborsIndex(X)
    exact = index.kneighbors(Q, K, allowed=mask)[1]
    if impl == "fastnn":
        fn = lambda: index.kneighbors(Q, K, allowed=mask)  # noqa: E731
    elif impl == "numpy":
        def fn():
            S = X[ids].astype(np.float64)
            D = (Q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * Q @ S.T + (S ** 2).sum(1)
            part = np.argpartition(D, K - 1, axis=1)[:, :K]
            return ids[part]
    else:
        faiss = pytest.importorskip("faiss")
        if impl == "faiss-flat":
            fi = faiss.IndexFlatL2(X.shape[1])
            params = faiss.SearchParameters()
        else:
            fi = faiss.IndexHNSWFlat(X.shape[1], 32)
            fi.hnsw.efConstruction = 40
            params = faiss.SearchParametersHNSW()
            params.efSearch = 64
        fi.add(X)
        sel = faiss.IDSelectorBatch(ids.astype(np.int64))
        params.sel = sel

        def fn():
            return fi.search(Q, K, params=params)
    out = benchmark.pedantic(fn, rounds=_ROUNDS, warmup_rounds=1)
    if impl.startswith("faiss"):
        found = out[1]
        benchmark.extra_info["recall@10"] = float(np.mean(
            [len(set(a) & set(b)) / K for a, b in zip(found, exact)]))


PER_QUERY_QUERIES = 1000


@pytest.mark.parametrize("frac", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("impl", ["fastnn", "numpy"])
def test_filtered_per_query(benchmark, data, frac, impl):
    """A different allowed set per query (a CSR of random rows at ``frac``),
    the first 1,000 test queries: fastnn (ranked lists of the pruned search
    for large sets, every allowed distance for small ones; ``stats_`` in
    ``extra_info``) against numpy measuring each query's allowed rows (a
    float32 matrix-vector product per query, as a user would write it).
    faiss takes one selector per search call, so it has no row here."""
    from scipy import sparse
    X, Q = data
    Q = Q[:PER_QUERY_QUERIES]
    masks = np.random.default_rng(1).random((len(Q), len(X))) < frac
    allowed = sparse.csr_matrix(masks)
    benchmark.group = f"filtered-per-query-{int(frac * 100)}pct-k{K}"
    index = NearestNeighborsIndex(X)
    index.kneighbors(Q[:10], K)
    if impl == "fastnn":
        def fn():
            out = index.kneighbors(Q, K, allowed=allowed)[1]
            benchmark.extra_info.update(index.stats_)
            return out
    else:
        x_sqnorms = (X.astype(np.float64) ** 2).sum(1)

        def fn():
            out = np.empty((len(Q), K), np.int64)
            for i in range(len(Q)):
                rows = allowed.indices[allowed.indptr[i]:allowed.indptr[i + 1]]
                d = x_sqnorms[rows] - 2.0 * (X[rows] @ Q[i])
                out[i] = rows[np.argpartition(d, K - 1)[:K]]
            return out
    found = benchmark.pedantic(fn, rounds=_ROUNDS, warmup_rounds=1)
    exact = index.kneighbors(Q, K, allowed=allowed)[1]
    benchmark.extra_info["recall@10"] = float(np.mean(
        [len(set(a) & set(b)) / K for a, b in zip(found, exact)]))
