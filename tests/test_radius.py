"""Radius search and ``fastnn.NearestNeighbors`` against scikit-learn's
``NearestNeighbors(algorithm='brute')``: on integer data the same rows, in
the same order, with the same distances (radii taken from the data's own
distances, so rows lie exactly on the boundary)."""

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.neighbors import NearestNeighbors as SkNN
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastnn.kernels import amx as _amx
from fastnn import (NearestNeighbors, NearestNeighborsIndex, PrunedOptions,
                    RadiusNeighborsClassifier, RadiusNeighborsRegressor,
                    RadiusNeighborsTransformer)


# algorithm="brute": fastnn's engine (see test_estimators)
@parametrize_with_checks([NearestNeighbors(algorithm="brute"),
                          RadiusNeighborsRegressor(algorithm="brute"),
                          RadiusNeighborsClassifier(algorithm="brute", outlier_label="most_frequent"),
                          RadiusNeighborsTransformer(algorithm="brute")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _assert_same(got, ref, sorted_results):
    """The same rows and distances; fastnn's order is index order, or
    (distance, index) with ``sort_results`` (sklearn fixes no order among
    equal distances, so its lists are put in that order first)."""
    (gd, gi), (rd, ri) = got, ref
    assert len(gi) == len(ri)
    for a, b, c, e in zip(gi, ri, gd, rd):
        order = np.lexsort((b, e)) if sorted_results else np.argsort(b, kind="stable")
        np.testing.assert_array_equal(a, b[order])
        np.testing.assert_array_equal(c, e[order])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 120), d=st.integers(1, 30), nq=st.integers(1, 15),
       dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       metric=st.sampled_from(["euclidean", "sqeuclidean", "manhattan", "minkowski1"]),
       levels=st.sampled_from([3, 50]), pick=st.floats(0, 1), sort_results=st.booleans(),
       self_query=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_radius_neighbors_equal_sklearn(n, d, nq, dtype, metric, levels, pick, sort_results,
                                        self_query, seed):
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    X[n // 2] = X[0]                                   # duplicates: ties, zero distances
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    params = (dict(metric="minkowski", p=1) if metric == "minkowski1" else dict(metric=metric))
    ref = SkNN(algorithm="brute", **params).fit(X.astype(np.float64))
    D = ref.kneighbors(X.astype(np.float64), n, return_distance=True)[0].ravel()
    radius = float(np.quantile(D, pick))              # a distance of the data: the boundary
    ours = NearestNeighbors(radius=radius, algorithm="brute", **params).fit(X)
    assert ours.engine_ == "fastnn"
    queries = None if self_query else Q
    ref_q = None if self_query else Q.astype(np.float64)
    got = ours.radius_neighbors(queries, sort_results=sort_results)
    want = ref.radius_neighbors(ref_q, radius=radius, sort_results=sort_results)
    _assert_same(got, want, sort_results)
    for mode in ("connectivity", "distance"):
        g = ours.radius_neighbors_graph(queries, mode=mode, sort_results=sort_results)
        w = ref.radius_neighbors_graph(ref_q, radius=radius, mode=mode)
        np.testing.assert_array_equal(g.toarray(), w.toarray())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), d=st.integers(1, 40), dtype=st.sampled_from(["float32", "float64"]),
       threads=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_index_radius_on_float_data_is_exact(n, d, dtype, threads, seed):
    """Float data: exactly the rows whose engine distance (a fixed-order
    float64 sum) is <= radius, whatever the thread count."""
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, d)).astype(dtype)
    Q = np.vstack([X[:2], r.normal(size=(7, d)).astype(dtype)])
    index = NearestNeighborsIndex(X, n_jobs=threads)
    exact = np.sqrt(((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2)
                    .sum(-1))
    radius = float(np.median(exact))
    dist, ind = index.radius_neighbors(Q, radius, sort_results=True)
    full_d, full_i = index.kneighbors(Q, n)             # the same distances, sorted
    full_sq = NearestNeighborsIndex(X, metric="sqeuclidean").kneighbors(Q, n)[0]
    for t in range(len(Q)):
        m = full_sq[t] <= radius * radius                # (sklearn's test)
        np.testing.assert_array_equal(ind[t], full_i[t][m])
        np.testing.assert_array_equal(dist[t], full_d[t][m])
        # against numpy's own sums: the same set up to rows within rounding of the radius
        near = np.abs(exact[t] - radius) <= 1e-9 * max(radius, 1.0)
        np.testing.assert_array_equal(np.isin(np.arange(n), ind[t])[~near],
                                      (exact[t] <= radius)[~near])


def test_radius_errors():
    X = np.arange(12.0).reshape(6, 2)
    nn = NearestNeighbors(algorithm="brute").fit(X)
    ref = SkNN(algorithm="brute").fit(X)
    # radii the exact search does not take: sklearn's own error or answer
    for bad in (-1.0, "a"):
        with pytest.raises((ValueError, TypeError)) as want:
            ref.radius_neighbors(X, radius=bad)
        with pytest.raises(type(want.value), match=str(want.value)):
            nn.radius_neighbors(X, radius=bad)
    for bad, exc in ((-1.0, ValueError), (np.inf, ValueError), ("a", TypeError)):
        with pytest.raises(exc, match="radius"):
            NearestNeighborsIndex(X).radius_neighbors(X, bad)
    _assert_same(nn.radius_neighbors(X[:2], radius=np.inf),
                 ref.radius_neighbors(X[:2], radius=np.inf), False)
    with pytest.raises(ValueError, match="return_distance must be True"):
        nn.radius_neighbors(X, return_distance=False, sort_results=True)
    with pytest.raises(ValueError, match="Unsupported mode"):
        nn.radius_neighbors_graph(X, mode="weights")
    with pytest.raises(ValueError, match="radius search serves"):
        NearestNeighborsIndex(X, metric="ip").radius_neighbors(X, 1.0)
    empty = nn.radius_neighbors(X, radius=0.5)
    assert all(len(a) == 1 for a in empty[1])          # each point finds itself only
    assert len(NearestNeighborsIndex(X).radius_neighbors(X[:0], 2.0)[1]) == 0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 80), d=st.integers(1, 12), nq=st.integers(1, 15),
       dtype=st.sampled_from(["uint8", "float64"]),
       metric=st.sampled_from(["euclidean", "manhattan"]),
       weights=st.sampled_from(["uniform", "distance", "callable"]), outputs=st.integers(0, 2),
       pick=st.floats(0, 1), seed=st.integers(0, 2 ** 16))
def test_radius_regressor_equals_sklearn(n, d, nq, dtype, metric, weights, outputs, pick, seed):
    """Predictions (weighted means, several outputs, NaN with sklearn's
    warning where a query has no neighbour) equal sklearn's bit for bit on
    integer-valued data."""
    from sklearn.neighbors import RadiusNeighborsRegressor as SkRNR
    r = np.random.default_rng(seed)
    X = r.integers(0, 6, (n, d)).astype(dtype)
    Q = r.integers(0, 6, (nq, d)).astype(dtype)
    y = r.normal(size=(n,) if outputs == 0 else (n, outputs))
    w = (lambda dist: [np.exp(-a) + 0.5 for a in dist]) if weights == "callable" else weights
    D = SkNN(algorithm="brute", metric=metric).fit(X.astype(float)).kneighbors(
        Q.astype(float), n)[0].ravel()
    radius = float(np.quantile(D, pick))
    ours = RadiusNeighborsRegressor(radius, weights=w, metric=metric, algorithm="brute").fit(X, y)
    assert ours.engine_ == "fastnn"
    ref = SkRNR(radius=radius, weights=w, metric=metric, algorithm="brute").fit(
        X.astype(float), y)
    with warnings.catch_warnings(record=True) as got_w:
        warnings.simplefilter("always")
        got = ours.predict(Q)
    with warnings.catch_warnings(record=True) as ref_w:
        warnings.simplefilter("always")
        want = ref.predict(Q.astype(float))
    np.testing.assert_array_equal(got, want)
    assert ([str(x.message) for x in got_w if "no neighbors" in str(x.message)]
            == [str(x.message) for x in ref_w if "no neighbors" in str(x.message)])


# the product kernels this CPU runs: the radius bounds take bfloat16 tile
# products on 'amx' / 'avx512', the int8 filter with
# ``first_stage='int8'`` (AVX-512 VNNI) and on 'avxvnni' / 'avx2', float32 BLAS on
# 'portable'
_KERNELS = (["portable"] + [k for k in ("amx", "avx512") if _amx.available(k)]
            + (["int8"] if _amx.available_int8("avx512") else [])
            + [k for k in ("avxvnni", "avx2") if _amx.available_int8(k)])


def _radius_index(X, kernels, **kw):
    """An index on the radius bound's kernel path ``kernels`` (see
    ``_KERNELS``)."""
    options = kw.pop("pruned_options", PrunedOptions())
    if kernels == "int8":
        return NearestNeighborsIndex(X, pruned_options=dataclasses.replace(
            options, first_stage="int8"), **kw)
    return NearestNeighborsIndex(X, kernels=kernels, pruned_options=options, **kw)


_PRODUCTS = {"portable": "blas-float32", "amx": "amx-bf16-filtered",
             "avx512": "avx512-bf16-filtered", "int8": "avx512-int8-filtered",
             "avx2": "avx2-int8-filtered", "avxvnni": "avxvnni-int8-filtered"}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 160),
       dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]),
       metric=st.sampled_from(["euclidean", "sqeuclidean"]), levels=st.sampled_from([3, 40]),
       offset=st.sampled_from([0.0, 1e4]), scale=st.sampled_from([1.0, 1e-3]),
       pick=st.floats(0, 1), threads=st.integers(1, 2), add=st.booleans(),
       kernels=st.sampled_from(_KERNELS), room=st.sampled_from([1, 3, 1024]),
       seed=st.integers(0, 2 ** 16))
def test_projected_radius_bounds_equal_every_row(n, d, dtype, metric, levels, offset, scale,
                                                 pick, threads, add, kernels, room, seed):
    """The projected lower bounds (``backend='pruned'``) drop no row: the
    same rows and distances as measuring every row (``backend='brute'``),
    on ties, duplicates, data far from the origin and tiny scales, radii
    on the boundary, any thread count, and after ``add`` (the projection
    is rebuilt for the new rows), with a candidate room small enough that
    queries overflow it (the second pass)."""
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(np.float64)
    X[n // 2] = X[0]
    Q = np.vstack([X[:3], r.integers(0, levels, (5, d))])
    if dtype.startswith("float"):
        X, Q = X * scale + offset, Q * scale + offset
    X, Q = X.astype(dtype), Q.astype(dtype)
    pruned = _radius_index(X[: max(1, n // 2)] if add else X, kernels, metric=metric,
                           backend="pruned", n_jobs=threads,
                           pruned_options=PrunedOptions(radius_candidates=room))
    if add:
        pruned.radius_neighbors(Q, 1.0)                 # projection built, then rows added
        pruned.add(X[max(1, n // 2):])
    brute = NearestNeighborsIndex(X, metric=metric, backend="brute")
    D = brute.kneighbors(Q, n)[0]
    radius = float(np.quantile(D, pick))
    got = pruned.radius_neighbors(Q, radius, sort_results=True)
    assert pruned.stats_["stage1"] == "projection"
    assert pruned.stats_["products"] == _PRODUCTS[kernels]
    want = brute.radius_neighbors(Q, radius, sort_results=True)
    assert brute.stats_["stage1"] == "every-row"
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got[0], want[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_pickled_radius_bounds_move_to_a_process_without_tile_kernels(tmp_path):
    """An index pickled after a radius search on tile kernels (its fused
    operand built: bfloat16 or int8) answers the same in a process without
    them: the bounds of another kernel family are rebuilt, not used."""
    import pickle
    import subprocess
    import sys
    r = np.random.default_rng(21)
    X = (r.integers(0, 3, (5000, 6)) @ r.integers(0, 3, (6, 140))).astype(np.float32)
    Q = X[:30] + r.integers(0, 2, (30, 140)).astype(np.float32)
    index = NearestNeighborsIndex(X)
    radius = float(np.median(index.kneighbors(Q, 20)[0][:, -1]))
    d, i = index.radius_neighbors(Q, radius)
    if index.stats_["products"] == "blas-float32":
        pytest.skip("'auto' takes no tile kernels on this CPU: nothing to carry to another path")
    assert index.stats_["products"].endswith("-filtered")       # (bfloat16 or int8)
    (tmp_path / "index.pkl").write_bytes(pickle.dumps((index, Q, radius)))
    code = ("import pickle, sys, numpy as np; index, Q, radius = pickle.load(open(sys.argv[1], "
            "'rb')); d, i = index.radius_neighbors(Q, radius); "
            "print(index.stats_['products']); np.save(sys.argv[2], np.concatenate(list(i)))")
    env = dict(__import__("os").environ, FASTNN_AMX="0", FASTNN_AVX512="0", FASTNN_AVX2="0")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index.pkl"),
                          str(tmp_path / "rows.npy")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "blas-float32"
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), np.concatenate(list(i)))


@pytest.mark.parametrize("kernels", _KERNELS)
@pytest.mark.parametrize("threads,room", [(1, 2), (2, 1024)])
def test_projected_radius_bounds_across_column_tiles(kernels, threads, room):
    """An index of more rows than one bound block's column tile
    (``RADIUS_TILE_BLOCK``, ``RADIUS_BLAS_BLOCK``) and a last, partial
    tile: each query's candidates are collected across the tiles in index
    order, over several query blocks, with and without the second pass;
    the rows equal measuring every row."""
    from fastnn.neighbors.radius import RADIUS_BLAS_BLOCK, RADIUS_TILE_BLOCK
    tile = max(RADIUS_TILE_BLOCK[1], RADIUS_BLAS_BLOCK[1])
    r = np.random.default_rng(12)
    n = 2 * tile + 96
    X = (r.integers(0, 3, (n, 6)) @ r.integers(0, 3, (6, 64))).astype(np.float32)
    X[n - 1] = X[0]                                     # a tie in the last tile
    Q = np.vstack([X[:2], X[tile + 5:tile + 7],
                   X[:300] + r.integers(0, 2, (300, 64))]).astype(np.float32)
    pruned = _radius_index(X, kernels, backend="pruned", n_jobs=threads,
                           pruned_options=PrunedOptions(radius_candidates=room))
    brute = NearestNeighborsIndex(X, backend="brute")
    radius = float(np.quantile(brute.kneighbors(Q[:8], 50)[0][:, -1], 0.5))
    got = pruned.radius_neighbors(Q, radius)
    assert pruned.stats_["stage1"] == "projection"
    assert pruned.stats_["products"] == _PRODUCTS[kernels]
    want = brute.radius_neighbors(Q, radius)
    assert sum(len(a) for a in want[1]) > 3 * len(Q)
    assert len(got[1][0]) and got[1][0][-1] == n - 1
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got[0], want[0], strict=True):
        np.testing.assert_array_equal(a, b)
