"""``NearestNeighborsIndex.remove``: every search afterwards equals a search
of an index of the live rows only (ids mapped back), on every backend and
metric, after add, save/load and pickling."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn import NearestNeighborsIndex


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 400), d=st.integers(1, 24),
       share=st.floats(0, 0.95), k=st.integers(1, 20), farthest=st.booleans(),
       dtype=st.sampled_from(["uint8", "float32", "float64"]),
       metric=st.sampled_from(["euclidean", "sqeuclidean", "manhattan", "ip", "cosine"]),
       backend=st.sampled_from(["auto", "brute", "pruned", "faiss"]), grow=st.booleans())
def test_search_after_remove_equals_an_index_of_the_live_rows(seed, n, d, share, k, farthest,
                                                              dtype, metric, backend, grow):
    r = np.random.default_rng(seed)
    X = r.integers(0, 4, (n, d)).astype(dtype)
    X[n // 2] = X[0]                                     # ties
    Q = np.vstack([X[:2], r.integers(0, 4, (5, d)).astype(dtype)])
    if metric in ("manhattan", "ip") and backend in ("pruned", "faiss"):
        backend = "auto"
    gone = r.choice(n, int(share * n), replace=False)
    index = NearestNeighborsIndex(X[: n - n // 4] if grow else X, metric=metric, backend=backend)
    index.remove(gone[gone < index.n_samples])
    if grow:                                             # rows added after a remove
        index.add(X[n - n // 4:])
        index.remove(gone)
    live = np.setdiff1d(np.arange(n), gone)
    assert index.n_live == live.size
    k = min(k, live.size)
    if k == 0:
        with pytest.raises(ValueError):
            index.kneighbors(Q, 1)
        return
    want_d, want_i = NearestNeighborsIndex(X[live], metric=metric).kneighbors(Q, k,
                                                                            farthest=farthest)
    for searched in (index, pickle.loads(pickle.dumps(index))):
        got_d, got_i = searched.kneighbors(Q, k, farthest=farthest)
        np.testing.assert_array_equal(got_i, live[want_i])
        np.testing.assert_array_equal(got_d, want_d)
    if metric != "ip":
        radius = float(np.median(want_d))
        got = index.radius_neighbors(Q, radius)[1]
        want = NearestNeighborsIndex(X[live], metric=metric).radius_neighbors(Q, radius)[1]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, live[b])
    if metric != "cosine":
        allowed = np.arange(0, n, 2)
        al = np.intersect1d(allowed, live)
        if al.size >= k:
            got_i = index.kneighbors(Q, k, allowed=allowed)[1]
            want_i = NearestNeighborsIndex(X[al], metric=metric).kneighbors(Q, k)[1]
            np.testing.assert_array_equal(got_i, al[want_i])


def test_remove_save_load_compact_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    X, Q = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(9, 16))
    index = NearestNeighborsIndex(X).remove([0, 5, 5, 299])
    index.save(tmp_path / "ix")
    loaded = NearestNeighborsIndex.load(tmp_path / "ix")
    assert loaded.n_live == 297                           # (5 twice: removed once)
    np.testing.assert_array_equal(loaded.kneighbors(Q, 7)[1], index.kneighbors(Q, 7)[1])
    loaded.remove([1])                                   # (the mapped mask is read-only)
    assert loaded.n_live == 296 and index.n_live == 297
    small, ids = index.compacted()
    assert small.n_samples == 297 and small.removed is None
    np.testing.assert_array_equal(ids[small.kneighbors(Q, 7)[1]], index.kneighbors(Q, 7)[1])
    with pytest.raises(ValueError, match=r"ids: row ids must lie in \[0, 300\)"):
        index.remove([300])
    with pytest.raises(TypeError, match="1-D integer array"):
        index.remove([0.5])
    with pytest.raises(ValueError, match="n_neighbors"):
        index.kneighbors(Q, 298)
