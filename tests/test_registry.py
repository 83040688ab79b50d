"""The backend registry: which backend serves which call, and every backend
through the one interface (``search(index, request, dist, ind)``) against
a numpy brute force, ties to the lower row."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn import NearestNeighborsIndex, PrunedOptions
from fastnn.neighbors import SearchRequest, registry


def _request(Q, k, farthest=False, is_int=False):
    return SearchRequest(queries=Q, is_int=is_int, k=k, farthest=farthest, n_threads=1,
                         chunk_size=None)


def _reference(Q, X, k, metric, farthest):
    """numpy: squared (or L1, or negated products) values and rows, ordered
    by (value, row) (farthest: (-value, row))."""
    Qf, Xf = Q.astype(np.float64), X.astype(np.float64)
    if metric == "manhattan":
        D = np.abs(Qf[:, None] - Xf[None]).sum(-1)
    elif metric == "ip":
        D = -(Qf @ Xf.T)
    else:
        D = ((Qf[:, None] - Xf[None]) ** 2).sum(-1)
    key = -D if farthest else D
    order = np.lexsort((np.broadcast_to(np.arange(X.shape[0]), D.shape), key), axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), order


@pytest.mark.parametrize("metric,backend,k,farthest,n,d,expected", [
    ("euclidean", "auto", 5, False, 300, 8, "brute"),          # small index: brute force
    ("euclidean", "auto", 5, True, 2000, 64, "brute"),         # farthest: not pruned
    ("euclidean", "auto", 100, False, 2000, 64, "brute"),      # k above AUTO_MAX_K (unpruned)
    ("euclidean", "auto", 300, False, 2000, 64, "large-k"),    # k above LARGE_K
    ("euclidean", "pruned", 5, True, 2000, 64, "brute"),       # pruned cannot serve farthest
    ("euclidean", "faiss", 5, True, 2000, 64, "brute"),        # nor can faiss
    ("euclidean", "pruned", 5, False, 2000, 64, "pruned"),
    ("sqeuclidean", "faiss", 5, False, 2000, 64, "faiss"),
    ("euclidean", "brute", 300, False, 2000, 64, "large-k"),
    ("manhattan", "auto", 5, False, 2000, 64, "manhattan"),
    ("manhattan", "brute", 300, True, 2000, 64, "manhattan"),
    ("ip", "auto", 5, False, 2000, 64, "inner-product"),
])
def test_registry_choices(metric, backend, k, farthest, n, d, expected):
    X = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    index = NearestNeighborsIndex(X, metric=metric, backend=backend)
    chosen = registry.choose(index, backend, _request(X[:3], k, farthest))
    assert chosen.name == expected
    index.kneighbors(X[:3], k, farthest=farthest)
    assert index.stats_["backend"] == ("brute" if expected == "manhattan" else
                                       "brute" if expected == "inner-product" else expected)


def test_auto_follows_the_spectrum():
    """'auto' picks the pruned search for low-rank data (most variance in a
    few directions) and faiss for isotropic noise."""
    r = np.random.default_rng(1)
    low_rank = (r.normal(size=(3000, 8)) @ r.normal(size=(8, 64))).astype(np.float32)
    noise = r.normal(size=(3000, 64)).astype(np.float32)
    assert registry.auto_choice(NearestNeighborsIndex(low_rank), _request(low_rank, 5)) == \
        "pruned"
    assert registry.auto_choice(NearestNeighborsIndex(noise), _request(noise, 5)) == "faiss"


@pytest.mark.parametrize("metric,pruned_name,gemm_name", [
    ("euclidean", "pruned", "brute"), ("ip", "inner-product-pruned", "brute")])
def test_auto_takes_brute_force_for_small_batches_until_the_pruned_state_exists(
        metric, pruned_name, gemm_name):
    """A batch of fewer than ``AUTO_MIN_PAIRS`` query-row pairs goes to
    brute force (the GEMM route for 'ip') while the pruned state is not
    built: building it costs more than such a batch saves. A larger batch
    builds it, and small batches keep the pruned route after that; every
    answer is the same."""
    r = np.random.default_rng(5)
    X = (r.normal(size=(3000, 8)) @ r.normal(size=(8, 64))).astype(np.float32)
    small = X[:40] + r.normal(size=(40, 64)).astype(np.float32)
    large = np.tile(small, (registry.AUTO_MIN_PAIRS // (40 * 3000) + 1, 1))
    assert large.shape[0] * 3000 >= registry.AUTO_MIN_PAIRS > small.shape[0] * 3000
    index = NearestNeighborsIndex(X, metric=metric)
    before = index.kneighbors(small, 5)
    assert index.stats_["backend"] == gemm_name
    index.kneighbors(large, 5)
    assert index.stats_["backend"] == pruned_name
    after = index.kneighbors(small, 5)
    assert index.stats_["backend"] == pruned_name
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-12, atol=0)
    D, order = _reference(small, X, 5, metric, False)
    np.testing.assert_array_equal(after[1], order)


@pytest.mark.parametrize("metric,backend", [("manhattan", "pruned"), ("manhattan", "faiss"),
                                            ("ip", "pruned"), ("euclidean", "hnsw")])
def test_registry_refuses_what_no_backend_serves(metric, backend):
    X = np.zeros((10, 3))
    with pytest.raises(ValueError, match="backend="):
        NearestNeighborsIndex(X, metric=metric, backend=backend)


def test_every_backend_declares_its_table():
    table = registry.registered()
    assert set(table) == {"brute", "large-k", "pruned", "faiss", "manhattan", "inner-product",
                          "inner-product-pruned", "cosine", "lp"}
    # (cosine: test_cosine.py, lp: test_lp.py, inner-product-pruned: test_inner_product.py)
    for name, backend in table.items():
        assert backend.name == name and backend.metrics and backend.min_k <= backend.max_k


_EUCLIDEAN = ["brute", "large-k", "pruned", "faiss"]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(_EUCLIDEAN + ["manhattan", "inner-product"]),
       dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       n=st.integers(2, 80), d=st.integers(1, 24), nq=st.integers(1, 12),
       k_frac=st.floats(0, 1), farthest=st.booleans(), levels=st.sampled_from([3, 256]),
       seed=st.integers(0, 2 ** 16))
def test_each_backend_through_the_interface(name, dtype, n, d, nq, k_frac, farthest, levels,
                                            seed):
    """Each backend, called directly through the interface on a request its
    table accepts, equals numpy (exact values, rows by the tie rule)."""
    backend = registry.registered()[name]
    metric = {"manhattan": "manhattan", "inner-product": "ip"}.get(name, "sqeuclidean")
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    X[n // 2] = X[0]                                     # duplicated rows: ties
    Q = np.vstack([X[:2], r.integers(0, levels, (nq, d)).astype(dtype)])
    k = max(1, min(n, int(round(k_frac * n))))
    if name == "large-k":
        k = n                                            # (its table: any k; tested at full rank)
    if not backend.farthest:
        farthest = False
    index = NearestNeighborsIndex(X, metric=metric,
                                  pruned_options=PrunedOptions(stage1_tile=32,
                                                               stage1_tile_filtered=64))
    request = _request(Q, k, farthest, is_int=dtype in ("uint8", "int16"))
    dist = np.empty((Q.shape[0], k))
    ind = np.empty((Q.shape[0], k), np.int64)
    backend.search(index, request, dist, ind)
    rd, ri = _reference(Q, X, k, metric, farthest)
    if metric == "ip":
        rd = -rd                                          # (products, largest first)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=1e-9)
    assert index.stats_["backend"] in (name, "brute")


def test_pruned_options_are_checked():
    with pytest.raises(ValueError, match="multiple of 32"):
        PrunedOptions(stage1_tile=100)
    with pytest.raises(ValueError, match="key_capacity must be a positive integer"):
        PrunedOptions(key_capacity=0)
    with pytest.raises(ValueError, match="unknown fields"):
        NearestNeighborsIndex(np.zeros((4, 2)), pruned_options={"tile": 3})
    with pytest.raises(TypeError, match="pruned_options must be"):
        NearestNeighborsIndex(np.zeros((4, 2)), pruned_options=5)
