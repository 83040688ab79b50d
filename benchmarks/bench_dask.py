"""Sharded exact search on Dask: 1 vs 2 worker processes on this machine,
next to the single-machine engine (same run), CIFAR-10 raw pixels.

    pytest benchmarks/bench_dask.py --benchmark-only -p no:cacheprovider

extra_info records per-shard figures used by docs/scaling.md.
"""

import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")

from fastnn import NearestNeighborsIndex  # noqa: E402
from fastnn.distributed import ShardedIndex  # noqa: E402

N_QUERIES = 2000
SHARDS = 4


@pytest.fixture(scope="module")
def data(cifar):
    return cifar.x_train.reshape(50000, -1), cifar.x_test[:N_QUERIES].reshape(N_QUERIES, -1)


@pytest.mark.parametrize("workers", [1, 2])
def test_dask_sharded(benchmark, data, workers):
    X, Q = data
    benchmark.group = "dask-raw-k1"
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        Xd = da.from_array(X, chunks=(50000 // SHARDS, -1))
        Xd = client.persist(Xd)                       # data already on the workers
        distributed.wait(Xd)
        # warm the JIT caches in the worker processes
        ShardedIndex(Xd[:2000].rechunk((1000, -1))).kneighbors(Q[:10], 1)

        def run():
            idx = ShardedIndex(Xd)
            return idx.kneighbors(Q, 1)
        benchmark.pedantic(run, rounds=1, warmup_rounds=0)
        benchmark.extra_info.update(workers=workers, shards=SHARDS, queries=N_QUERIES,
                                    merge_bytes_per_query_per_shard=16)


def test_single_machine(benchmark, data):
    X, Q = data
    benchmark.group = "dask-raw-k1"
    NearestNeighborsIndex(X[:2000]).kneighbors(Q[:10], 1)

    def run():
        return NearestNeighborsIndex(X).kneighbors(Q, 1)
    benchmark.pedantic(run, rounds=1)


def test_per_shard_figures(benchmark, data):
    """One 12,500-row shard, serial kernels (what one Dask task does)."""
    X, Q = data
    shard = X[: 50000 // SHARDS]
    benchmark.group = "dask-per-shard"
    NearestNeighborsIndex(shard[:2000], n_jobs=1).kneighbors(Q[:10], 1)

    def run():
        t = time.perf_counter()
        idx = NearestNeighborsIndex(shard, metric="sqeuclidean", n_jobs=1)
        idx.kneighbors(Q[:1], 1, n_jobs=1, backend="pruned")     # (builds the projection)
        build = time.perf_counter() - t
        idx.kneighbors(Q, 1, n_jobs=1)
        layout = idx.built.layout
        extra = sum(getattr(layout, f).nbytes for f in vars(layout)
                    if isinstance(getattr(layout, f), np.ndarray))
        benchmark.extra_info.update(build_s=build, rows=len(shard),
                                    data_bytes=int(shard.nbytes), index_extra_bytes=int(extra),
                                    exact_per_query=idx.stats_["exact_per_query_mean"])
    benchmark.pedantic(run, rounds=1)
