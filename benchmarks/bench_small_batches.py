"""Where the pruned search starts to pay: a fresh index (build included)
searched once, pruned against brute force, around ``AUTO_MIN_PAIRS``.

    pytest benchmarks/bench_small_batches.py --benchmark-only -p no:cacheprovider --benchmark-group-by=group

CIFAR-10 rows (raw pixels, HOG) x queries from the test set, k=1, 2 threads
(all cores of the 2-vCPU machines these ran on); each side the minimum of 5
rounds after one untimed round. Below ``AUTO_MIN_PAIRS`` query-row pairs
'auto' takes brute force while the pruned layout is not built (building it
costs more than such a batch saves); run it again with ``FASTNN_AMX=0``.
"""

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex, hog
from fastnn.neighbors.registry import AUTO_MIN_PAIRS

ROUNDS = 5
SHAPES = [(2000, 1000), (8000, 250), (4000, 1000), (2000, 2000), (8000, 500), (8000, 1000)]
_FEATURES = {}


def _features(cifar, kind, n, nq):
    if kind not in _FEATURES:
        x, q = cifar.x_train[:8000], cifar.x_test[:2000]
        if kind == "raw":
            _FEATURES[kind] = (x.reshape(len(x), -1), q.reshape(len(q), -1))
        else:
            _FEATURES[kind] = (hog(x, channel_axis=-1, dtype=np.float32),
                               hog(q, channel_axis=-1, dtype=np.float32))
    X, Q = _FEATURES[kind]
    return X[:n], Q[:nq]


@pytest.mark.parametrize("backend", ["pruned", "brute"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{nq}" for n, nq in SHAPES])
@pytest.mark.parametrize("kind", ["raw", "hog"])
def test_fresh_index_one_batch(benchmark, cifar, kind, shape, backend):
    n, nq = shape
    X, Q = _features(cifar, kind, n, nq)
    benchmark.group = f"{kind}-{n}x{nq}-{'auto-brute' if n * nq < AUTO_MIN_PAIRS else 'auto-pruned'}"

    def run():
        return NearestNeighborsIndex(X, backend=backend, n_jobs=2).kneighbors(Q, 1)
    _, ind = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    expected = NearestNeighborsIndex(X, backend="brute").kneighbors(Q, 1)[1]
    np.testing.assert_array_equal(ind, expected)
