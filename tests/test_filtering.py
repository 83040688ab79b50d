"""Filtered search (``allowed=``): equal to a brute-force search of the
allowed rows, with ties, for one set for all queries and one set per query,
every dtype and metric; bad filters refused with a clear error."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import sparse

from fastnn import NearestNeighborsIndex
from fastnn.neighbors.registry import AUTO_MIN_PAIRS


def _reference(Q, X, rows_per_query, k, metric, farthest=False):
    """numpy brute force over each query's allowed rows, (distance, row) order."""
    D = np.empty((len(Q), k))
    I = np.empty((len(Q), k), np.int64)
    for i, rows in enumerate(rows_per_query):
        diff = Q[i].astype(np.float64) - X[rows].astype(np.float64)
        if metric == "manhattan":
            d = np.abs(diff).sum(1)
        else:
            d = (diff ** 2).sum(1)
        order = np.lexsort((rows, -d if farthest else d))[:k]
        D[i], I[i] = d[order], rows[order]
    if metric == "euclidean":
        D = np.sqrt(D)
    return D, I


def _data(seed, n, d, nq, dtype, levels):
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    if n > 4:
        X[n // 2] = X[1]                                   # exact ties
    return r, X, Q


@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2 ** 31), n=st.integers(5, 700), d=st.integers(1, 30),
       nq=st.integers(1, 12), dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       levels=st.sampled_from([2, 5, 256]), frac=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
       form=st.sampled_from(["mask", "ids", "csr", "lists"]),
       metric=st.sampled_from(["euclidean", "sqeuclidean", "manhattan"]),
       backend=st.sampled_from(["auto", "brute", "pruned"]), farthest=st.booleans())
def test_filtered_equals_brute_force_on_the_subset(seed, n, d, nq, dtype, levels, frac, form,
                                                   metric, backend, farthest):
    r, X, Q = _data(seed, n, d, nq, dtype, levels)
    if metric == "manhattan":
        backend = "auto"
    index = NearestNeighborsIndex(X, metric=metric, backend=backend)
    if form in ("mask", "ids"):
        mask = r.random(n) < frac
        mask[r.integers(0, n)] = True
        allowed = mask if form == "mask" else np.flatnonzero(mask)[::-1].copy()
        rows = [np.flatnonzero(mask)] * nq
    else:
        masks = r.random((nq, n)) < frac
        masks[np.arange(nq), r.integers(0, n, nq)] = True
        rows = [np.flatnonzero(m) for m in masks]
        allowed = sparse.csr_matrix(masks) if form == "csr" else [x[::-1] for x in rows]
    k = int(r.integers(1, min(len(x) for x in rows) + 1))
    dist, ind = index.kneighbors(Q, k, allowed=allowed, farthest=farthest)
    rd, ri = _reference(Q, X, rows, k, metric, farthest)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


def test_large_single_set_uses_the_pruned_search_of_the_subset():
    r = np.random.default_rng(3)
    X = (r.random((6000, 8)) @ r.random((8, 64)) * 50).astype(np.float32)
    mask = r.random(6000) < 0.5
    # (a batch of at least AUTO_MIN_PAIRS query-row pairs: smaller ones go
    # to brute force)
    n_queries = AUTO_MIN_PAIRS // int(mask.sum()) + 1
    Q = X[:n_queries] + r.normal(size=(n_queries, 64)).astype(np.float32)
    index = NearestNeighborsIndex(X)
    dist, ind = index.kneighbors(Q, 5, allowed=mask)
    assert index.stats_["backend"] == "pruned" and index.stats_["allowed_rows"] == mask.sum()
    rows = np.flatnonzero(mask)
    rd, ri = _reference(Q, X, [rows] * n_queries, 5, "euclidean")
    np.testing.assert_array_equal(ind, ri)
    assert mask[ind].all()


def test_bad_filters_are_refused():
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    Q = X[:3]
    index = NearestNeighborsIndex(X)
    with pytest.raises(ValueError, match="one value per index row"):
        index.kneighbors(Q, 1, allowed=np.ones(9, bool))
    with pytest.raises(ValueError, match=r"row ids must lie in \[0, 10\)"):
        index.kneighbors(Q, 1, allowed=np.array([0, 10]))
    with pytest.raises(TypeError, match="integer id array"):
        index.kneighbors(Q, 1, allowed=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="n_neighbors=3, but only 2 rows are allowed"):
        index.kneighbors(Q, 3, allowed=np.array([1, 1, 4]))
    with pytest.raises(ValueError, match=r"shape \(n_queries, n_samples\) = \(3, 10\)"):
        index.kneighbors(Q, 1, allowed=sparse.csr_matrix((3, 9)))
    with pytest.raises(ValueError, match="one per query"):
        index.kneighbors(Q, 1, allowed=[[1], [2]])
    with pytest.raises(ValueError, match="only 0 rows are allowed for query 1"):
        index.kneighbors(Q, 1, allowed=[[1], [], [2]])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "ip"])
def test_large_per_query_sets_take_the_ranked_lists(metric):
    """Per-query sets: large ones are served from the index's own ranked
    lists (growing where a list holds too few allowed rows, falling back to
    every allowed distance where even the longest does not), small ones by
    every allowed distance; all equal to brute force on each subset, ties
    to the lower row, removed rows never returned."""
    r = np.random.default_rng(11)
    X = (r.integers(0, 4, (3000, 6)) @ r.integers(0, 4, (6, 40))).astype(np.float32)
    X[1500:1600] = X[:100]                                  # exact ties
    Q = X[r.integers(0, 3000, 24)] + r.integers(0, 2, (24, 40)).astype(np.float32)
    index = NearestNeighborsIndex(X, metric=metric)
    # one batch of AUTO_MIN_PAIRS query-row pairs builds the pruned state;
    # after it, 'auto' keeps the pruned route for small batches too
    index.kneighbors(np.tile(Q, (AUTO_MIN_PAIRS // (24 * 3000) + 1, 1)), 1)
    assert index.stats_["backend"] in ("pruned", "inner-product-pruned")
    index.remove(np.arange(2000, 2010))
    live = np.ones(3000, bool)
    live[2000:2010] = False
    masks = r.random((24, 3000)) < 0.6
    masks[:6] = r.random((6, 3000)) < 0.02                 # small sets: every distance
    if metric == "ip":
        P = Q.astype(np.float64) @ X.T.astype(np.float64)
        near = np.argsort(-P, axis=1, kind="stable")
    else:
        D = ((Q[:, None].astype(np.float64) - X[None]) ** 2).sum(-1)
        near = np.argsort(D, axis=1, kind="stable")
    masks[6, near[6, :40]] = False                          # a list that must grow
    masks[7, near[7, :400]] = False                         # beyond the longest list
    dist, ind = index.kneighbors(Q, 7, allowed=sparse.csr_matrix(masks))
    ranked = index.stats_["ranked_queries"]
    assert 0 < ranked < 24
    rows = [np.flatnonzero(m & live) for m in masks]
    if metric == "ip":
        for i, rr in enumerate(rows):
            p = np.array([np.add.accumulate(Q[i].astype(np.float64) * X[j].astype(np.float64))[-1]
                          for j in rr])
            order = np.lexsort((rr, -p))[:7]
            np.testing.assert_array_equal(ind[i], rr[order])
            np.testing.assert_array_equal(dist[i], p[order])
    else:
        rd, ri = _reference(Q, X, rows, 7, metric)
        np.testing.assert_array_equal(ind, ri)
        np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)
