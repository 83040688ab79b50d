import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import pairwise_distances as sk_pd
from sklearn.neighbors import NearestNeighbors

from fastnn import NearestNeighborsIndex, PrunedOptions, kneighbors, pairwise_distances
from fastnn.kernels import amx
from fastnn.neighbors.registry import AUTO_MIN_PAIRS

BACKENDS = ["brute", "pruned", "faiss"]
# the pruned search's first stage, chosen through public parameters: every
# bfloat16 tile family this CPU runs (``kernels='amx'`` / ``'avx512'``), the
# AVX-512 VNNI int8 products where it has them
# (``PrunedOptions(first_stage='int8')``), the 256-bit int8 ones
# (``kernels='avxvnni'`` / ``'avx2'``), and the portable float32 BLAS path
# everywhere
FIRST_STAGES = ([f for f in amx.FAMILIES if amx.available(f)]
                + (["int8"] if amx.available_int8("avx512") else [])
                + [f for f in ("avxvnni", "avx2") if amx.available_int8(f)] + ["portable"])


def _index(X, path, **kw):
    """An index on the kernel ``path`` (see ``FIRST_STAGES``)."""
    if path == "int8":
        options = PrunedOptions.coerce(kw.pop("pruned_options", None))
        kw["pruned_options"] = dataclasses.replace(options, first_stage="int8")
        return NearestNeighborsIndex(X, **kw)
    return NearestNeighborsIndex(X, kernels=path, **kw)


def _pruned(X, first_stage, **kw):
    return _index(X, first_stage, backend="pruned", **kw)


def _check_first_stage(index, first_stage):
    assert index.stats_["first_stage"] == {"portable": "blas-float32", "int8": "avx512-int8",
                                           "avx2": "avx2-int8", "avxvnni": "avxvnni-int8"}.get(
        first_stage, f"{first_stage}-bf16")


def _reference(Q, X, k, farthest=False):
    """float64/int64 numpy brute force, sorted by (distance, index)."""
    if X.dtype.kind in "ui" and Q.dtype.kind in "ui":
        D = ((Q[:, None, :].astype(np.int64) - X[None].astype(np.int64)) ** 2).sum(-1).astype(float)
    else:
        D = ((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    key = -D if farthest else D
    order = np.lexsort((np.broadcast_to(np.arange(X.shape[0]), D.shape), key), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(D, order, 1)), order


@st.composite
def search_case(draw):
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 40))
    nq = draw(st.integers(0, 20))
    k = draw(st.integers(1, n))
    dtype = draw(st.sampled_from(["uint8", "int16", "float32", "float64"]))
    levels = draw(st.sampled_from([2, 4, 256]))       # few levels -> many exact ties
    seed = draw(st.integers(0, 2**31))
    return n, d, nq, k, dtype, levels, seed


@given(search_case(), st.sampled_from(BACKENDS + [f"pruned-{f}" for f in FIRST_STAGES]),
       st.booleans())
def test_kneighbors_matches_reference(case, backend, farthest):
    n, d, nq, k, dtype, levels, seed = case
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (n, d)).astype(dtype)
    Q = r.integers(0, levels, (nq, d)).astype(dtype)
    if n > 2:
        X[n // 2] = X[0]                               # duplicated rows
    b, _, kernels = backend.partition("-")
    idx = _index(X, kernels or "auto", backend=b)
    dist, ind = idx.kneighbors(Q, k, farthest=farthest)
    rd, ri = _reference(Q, X, k, farthest)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


def test_backends_threads_chunks_agree(rng):
    X = rng.normal(size=(3000, 48)).astype(np.float32)
    Q = rng.normal(size=(200, 48)).astype(np.float32)
    X[10] = X[20]
    Q[0] = X[10]
    base = NearestNeighborsIndex(X, backend="brute").kneighbors(Q, 7, n_jobs=1, chunk_size=17)
    for b in BACKENDS + [f"pruned-{f}" for f in FIRST_STAGES]:
        for nj in (1, 2):
            for cs in (None, 33):
                backend, _, kernels = b.partition("-")
                index = _index(X, kernels or "auto", backend=backend)
                got = index.kneighbors(Q, 7, n_jobs=nj, chunk_size=cs)
                np.testing.assert_array_equal(got[1], base[1])
                np.testing.assert_array_equal(got[0], base[0])


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_equals_sklearn_integer_valued(dtype, rng):
    X = rng.integers(0, 256, (2000, 96)).astype(dtype)
    Q = rng.integers(0, 256, (100, 96)).astype(dtype)
    d0, i0 = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(X).kneighbors(Q)
    d1, i1 = kneighbors(Q, X, 5)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-6 if dtype == "float32" else 0)


def test_pairwise_distances_equals_sklearn(rng):
    X = rng.integers(0, 256, (300, 70)).astype(np.uint8)
    Y = rng.integers(0, 256, (200, 70)).astype(np.uint8)
    np.testing.assert_array_equal(pairwise_distances(X, Y), sk_pd(X, Y))
    np.testing.assert_array_equal(pairwise_distances(X), sk_pd(X))
    Xf = rng.normal(size=(100, 30)).astype(np.float32)
    a = pairwise_distances(Xf)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, sk_pd(Xf), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pairwise_distances(Xf, metric="sqeuclidean", chunk_size=7),
                               sk_pd(Xf, metric="sqeuclidean"), rtol=1e-5, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 90), m=st.integers(1, 70), d=st.integers(1, 200),
       metric=st.sampled_from(["euclidean", "sqeuclidean"]), chunk=st.sampled_from([None, 1, 33]),
       threads=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_uint8_pairwise_paths_equal_sklearn(n, m, d, metric, chunk, threads, seed):
    """uint8 distances on AMX integer tiles (exact int32 products) and on
    the float64 GEMM (without AMX-INT8) both equal sklearn's bit for bit:
    X vs Y, X vs itself (zero diagonal), chunked, either thread count."""
    from unittest import mock

    from fastnn.neighbors import pairwise as pw
    r = np.random.default_rng(seed)
    X = r.integers(0, 256, (n, d)).astype(np.uint8)
    Y = r.integers(0, 256, (m, d)).astype(np.uint8)
    X[: n // 3] = X[n // 3: 2 * (n // 3)]            # repeated rows
    calls = []
    real = pw.exact_u8_rows

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    for forced_off in (False, True):
        calls.clear()
        kernels = "portable" if forced_off else "auto"
        with mock.patch.object(pw, "exact_u8_rows", spy):
            got = pairwise_distances(X, Y, metric=metric, n_jobs=threads, chunk_size=chunk,
                                     kernels=kernels)
            own = pairwise_distances(X, metric=metric, n_jobs=threads, chunk_size=chunk,
                                     kernels=kernels)
            blocks = np.vstack(list(pw.pairwise_distances_chunked(
                X, Y, metric=metric, chunk_size=chunk or 40, kernels=kernels)))
        np.testing.assert_array_equal(got, sk_pd(X, Y, metric=metric))
        np.testing.assert_array_equal(own, sk_pd(X, metric=metric))
        np.testing.assert_array_equal(blocks, got)
        assert bool(calls) == (not forced_off and amx.available_int8())


def test_bad_input(rng):
    X = rng.random((10, 3))
    with pytest.raises(ValueError, match="n_neighbors"):
        kneighbors(X, X, 11)
    with pytest.raises(ValueError, match="n_neighbors"):
        kneighbors(X, X, 0)
    with pytest.raises(ValueError, match="features"):
        kneighbors(X[:, :2], X, 1)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        kneighbors(X, bad, 1)
    with pytest.raises(ValueError, match="2-D"):
        kneighbors(X, X[0], 1)
    with pytest.raises(ValueError, match="empty"):
        kneighbors(X, X[:0], 1)
    with pytest.raises(TypeError, match="numeric"):
        kneighbors(X, X.astype(complex), 1)
    with pytest.raises(ValueError, match="metric"):
        kneighbors(X, X, 1, metric="braycurtis")


@pytest.mark.cifar
def test_cifar_raw_1nn_identical_to_sklearn(cifar):
    X = cifar.x_train.reshape(len(cifar.x_train), -1)
    Q = cifar.x_test[:1000].reshape(1000, -1)
    d0, i0 = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(X).kneighbors(Q)
    idx = NearestNeighborsIndex(X)
    d1, i1 = idx.kneighbors(Q, 1)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    assert idx.stats_["backend"] == "pruned"
    # every backend against the pruned one
    for b in ("brute", "faiss"):
        np.testing.assert_array_equal(idx.kneighbors(Q[:200], 5, backend=b)[1],
                                      idx.kneighbors(Q[:200], 5)[1])
    blas = _pruned(X, "portable")
    np.testing.assert_array_equal(blas.kneighbors(Q[:200], 5)[1], idx.kneighbors(Q[:200], 5)[1])
    _check_first_stage(blas, "portable")


def test_pairwise_symmetric_blocks(rng):
    """D(X, X) is computed by upper-triangle blocks and mirrored: exactly
    symmetric, zero diagonal, equal to the general X-vs-Y path and sklearn."""
    from sklearn.metrics import pairwise_distances as sk_pd
    X = rng.integers(0, 256, (203, 37)).astype(np.uint8)
    for chunk in (None, 1, 16, 64, 500):
        D = pairwise_distances(X, chunk_size=chunk)
        np.testing.assert_array_equal(D, D.T)
        np.testing.assert_array_equal(np.diag(D), 0.0)
        np.testing.assert_array_equal(D, sk_pd(X))
    Xf = rng.random((150, 20)).astype(np.float32)
    D = pairwise_distances(Xf, chunk_size=32)
    assert D.dtype == np.float32
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_allclose(D, pairwise_distances(Xf, Xf.copy()), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=40)
@given(exp=st.sampled_from([-400, -150, -60, -30, -10, 0, 10, 30, 60, 120, 200, 490]),
       seed=st.integers(0, 2 ** 16), k=st.integers(1, 5),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_pruned_is_scale_invariant(exp, seed, k, dtype):
    """Tiny and huge magnitudes (float64 beyond float32's range too): the
    pruned backend's float32 stages are rescaled by a power of two, the faiss
    backend falls back where float32 would overflow; every backend gives the
    exact answer, without overflow warnings."""
    if dtype == np.float32 and abs(exp) > 30:
        exp = 30 if exp > 0 else -30
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(600, 24)) * 2.0 ** exp).astype(dtype)
    X[100:120] = X[:20]                                     # exact ties
    Q = np.vstack([X[:5], (rng.normal(size=(40, 24)) * 2.0 ** exp).astype(dtype)])
    index = NearestNeighborsIndex(X)
    d2, i2 = index.kneighbors(Q, k, backend="brute")
    ref = np.sqrt(((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2)
                  .sum(-1))
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), ref.shape), ref), axis=-1)[:, :k]
    np.testing.assert_array_equal(i2, order)
    for backend in ("pruned", "faiss"):
        d1, i1 = index.kneighbors(Q, k, backend=backend)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(d1, d2)
    d1, i1 = _pruned(X, "portable").kneighbors(Q, k)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def test_float64_beyond_1e150_is_refused():
    X = np.ones((10, 3))
    X[2, 1] = 1e200
    with pytest.raises(ValueError, match="1e150"):
        kneighbors(X, X, 1)


def test_auto_backend_follows_the_spectrum(rng):
    """'auto' takes the pruned search where a few directions hold most of the
    variance (even spread over ~90 of 324 features, like HOG), faiss on
    random-like data; every choice gives the brute-force answer."""
    n, d = 3000, 324
    basis = rng.standard_normal((80, d))
    hog_like = rng.standard_normal((n, 80)) @ basis + 0.05 * rng.standard_normal((n, d))
    flat = rng.standard_normal((n, d))
    for X, expected in ((hog_like, "pruned"), (flat, "faiss")):
        idx = NearestNeighborsIndex(X)
        # (a batch of AUTO_MIN_PAIRS query-row pairs: smaller ones take brute force)
        Q = np.tile(X[:40], (AUTO_MIN_PAIRS // (40 * n) + 1, 1)) + 0.01
        d_auto, i_auto = idx.kneighbors(Q, 3)
        assert idx.stats_["backend"] == expected
        d_ref, i_ref = idx.kneighbors(Q, 3, backend="brute")
        np.testing.assert_array_equal(i_auto, i_ref)
        np.testing.assert_array_equal(d_auto, d_ref)


@pytest.mark.cifar
def test_cifar_hog_backends_agree(cifar):
    """Real HOG features: 'auto' picks the pruned search and returns the
    brute-force neighbours (exact float64 distances)."""
    from fastnn import hog
    X = hog(cifar.x_train[:20000], channel_axis=-1)
    Q = hog(cifar.x_test[:300], channel_axis=-1)
    idx = NearestNeighborsIndex(X)
    d1, i1 = idx.kneighbors(Q, 5)
    assert idx.stats_["backend"] == "pruned"
    d0, i0 = idx.kneighbors(Q, 5, backend="brute")
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    blas = _pruned(X, "portable")
    d2, i2 = blas.kneighbors(Q, 5)
    _check_first_stage(blas, "portable")
    np.testing.assert_array_equal(i2, i0)
    np.testing.assert_array_equal(d2, d0)


@settings(max_examples=80)
@given(n=st.integers(1, 700), k_frac=st.floats(0.0, 1.0), tile=st.sampled_from([64, 128, 192]),
       cap=st.sampled_from([1, 3, 40, 8192]), levels=st.sampled_from([3, 16, 256]),
       dtype=st.sampled_from(["uint8", "float32", "float64"]), seed=st.integers(0, 2 ** 16),
       m=st.sampled_from([2, 5, None]), path=st.sampled_from(FIRST_STAGES),
       tile2=st.sampled_from([32, 96]))
def test_pruned_stage1_tiles_and_overflow(n, k_frac, tile, cap, levels, dtype, seed, m, path,
                                          tile2):
    """The pruned search's stage 1 over many small tiles (partial last
    sub-blocks, k above a tile, seeds spanning tiles) and with tiny key lists
    (every query overflowing, keys recomputed) gives the reference answer;
    few projection directions make the bounds loose, so that the keys kept
    in stage 1 (not only the seeds) decide."""
    r = np.random.default_rng(seed)
    k = max(1, min(n, int(round(k_frac * n))))
    X = r.integers(0, levels, (n, 20)).astype(dtype)
    X[n // 3:n // 3 + n // 4] = X[:n // 4]                 # duplicated rows: exact ties
    Q = np.vstack([X[:3], r.integers(0, levels, (30, 20)).astype(dtype)])
    options = PrunedOptions(stage1_tile=tile, key_capacity=cap, stage1_tile_filtered=tile2)
    index = _pruned(X, path, n_components=m, pruned_options=options)
    dist, ind = index.kneighbors(Q, k)
    rd, ri = _reference(Q, X, k)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


@pytest.mark.parametrize("first_stage", FIRST_STAGES)
def test_pruned_overflow_path_is_taken(first_stage, rng):
    """With a one-key list every query overflows and has its keys
    recomputed: still the brute-force answer."""
    X = rng.normal(size=(900, 32))
    Q = rng.normal(size=(50, 32))
    index = _pruned(X, first_stage, pruned_options=PrunedOptions(key_capacity=1))
    d1, i1 = index.kneighbors(Q, 4)
    assert index.stats_["stage1_overflows"] > 0
    _check_first_stage(index, first_stage)
    d0, i0 = index.kneighbors(Q, 4, backend="brute")
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("farthest", [False, True])
def test_large_k_equals_reference(dtype, farthest, rng):
    """k in the hundreds up to n (a full ranking): selection + stable sort,
    whatever backend is asked for, equals the reference (ties by index)."""
    X = rng.integers(0, 6, (1500, 12)).astype(dtype)      # few levels: many ties
    Q = np.vstack([X[:4], rng.integers(0, 6, (20, 12)).astype(dtype)])
    index = NearestNeighborsIndex(X)
    for k in (300, 1500):
        rd, ri = _reference(Q, X, k, farthest)
        for backend in BACKENDS:
            dist, ind = index.kneighbors(Q, k, farthest=farthest, backend=backend)
            assert index.stats_["backend"] == "large-k"
            np.testing.assert_array_equal(ind, ri)
            np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


@pytest.mark.parametrize("first_stage", FIRST_STAGES)
@pytest.mark.parametrize("k", [1, 3])
def test_pruned_first_stage_rounding_is_covered(first_stage, k):
    """Neighbours on thin shells: every point of a query's cluster lies at
    distance 1 + (0 .. 1e-4) from it, far less than the rounding of the
    first-stage vectors (bfloat16: ~0.4 % of their norm, here ~100x the
    shell's spread). The answer is exact only if the first stage's margin
    covers that rounding (this test fails when it does not)."""
    rng = np.random.default_rng(7)
    d, per = 6, 300
    centres = rng.normal(size=(12, d)) * 100.0
    dirs = rng.normal(size=(12, per, d))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    radii = 1.0 + rng.uniform(0.0, 1e-4, (12, per, 1))
    X = (centres[:, None, :] + dirs * radii).reshape(-1, d)
    index = _pruned(X, first_stage)
    dist, ind = index.kneighbors(centres, k)
    _check_first_stage(index, first_stage)
    rd, ri = _reference(centres, X, k)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


@pytest.mark.skipif(not amx.available_int8(), reason="no AMX-INT8 here: uint8 data project "
                    "by float64 GEMM")
@pytest.mark.parametrize("n, d", [(300, 100), (256, 128), (97, 64)])
def test_uint8_projection_by_int8_digits_is_within_its_bounds(n, d, rng):
    """uint8 data project exactly by integer tile products with the int8
    digits of the directions (rows padded or not): the stored first-stage
    vectors lie within their bound E1 of the exact projection (float64
    numpy on the same directions), and the search is exact."""
    from fastnn.neighbors.pruned.projection import build_projection, fit_spectrum, project_rows
    family = amx.kernel_family("u8s8")
    if family is None:
        pytest.skip("no int8 tile kernels on this CPU (AMX-INT8 or AVX512-VNNI)")
    basis = rng.integers(0, 4, (6, d))
    X = np.clip(rng.integers(0, 40, (n, 6)) @ basis // 6 + rng.integers(0, 30, (n, d)),
                0, 255).astype(np.uint8)
    proj = build_projection(X, True, None, fit_spectrum(X, None, 0), PrunedOptions(),
                            first_stage="bf16", int8_kernels=True)
    assert proj.int8 is not None
    rows, _ = project_rows(X, True, proj, 2, int8_family=family)
    v = (X.astype(np.float64) - proj.centre) * proj.scale
    Z = v @ proj.directions_t
    m1 = proj.first_stage_components
    res = np.sqrt(np.maximum((v * v).sum(1) - (Z[:, :m1] ** 2).sum(1), 0.0))
    exact = np.hstack([Z[:, :m1], res[:, None]])
    err = np.sqrt(((rows.keys.astype(np.float64) - exact) ** 2).sum(1))
    assert np.all(err <= rows.key_error)
    index = NearestNeighborsIndex(X, backend="pruned")
    Q = np.vstack([X[:5], rng.integers(0, 256, (20, d)).astype(np.uint8)])
    dist, ind = index.kneighbors(Q, 3)
    rd, ri = _reference(Q, X, 3)
    np.testing.assert_array_equal(ind, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("first_stage", FIRST_STAGES)
@pytest.mark.parametrize("exp", [30, 62, 70, 120])
def test_pruned_queries_far_larger_than_the_index(first_stage, exp, rng):
    """Queries 2^30 .. 2^120 times the index's magnitude: their squared
    norms would overflow the float32 / bfloat16 first-stage keys, so such
    queries are answered exactly by the brute-force path, without warnings."""
    X = rng.normal(size=(1500, 40))
    Q = np.vstack([rng.normal(size=(10, 40)) * 2.0 ** exp, X[:3]])
    index = _pruned(X, first_stage)
    d1, i1 = index.kneighbors(Q, 3)
    d0, i0 = index.kneighbors(Q, 3, backend="brute")
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)


@pytest.mark.parametrize("first_stage", FIRST_STAGES)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_pruned_clustered_index(first_stage, dtype, k):
    """An index of many stage-1 tiles is clustered (the first tile of a
    block of queries is their cluster; for uint8 with AMX-INT8 and k up to a
    quarter of a tile that tile is measured exactly). Rows duplicated across
    clusters and queries equal to index rows make exact ties; the answer is
    the reference's, whatever the thread count and query chunk, also when
    every query's key list overflows (all keys recomputed)."""
    r = np.random.default_rng(k)
    centres = r.integers(20, 236, (12, 48))
    X = np.clip(centres[r.integers(0, 12, 3000)] + r.integers(-20, 21, (3000, 48)), 0, 255)
    X[2000:2300] = X[:300]
    X = X.astype(dtype)
    Q = np.vstack([X[::97], np.clip(centres[r.integers(0, 12, 60)]
                                    + r.integers(-25, 26, (60, 48)), 0, 255).astype(dtype)])
    rd, ri = _reference(Q, X, k)
    for n_jobs, chunk, cap in ((1, None, 8192), (2, None, 8192), (2, 37, 8192), (2, None, 1)):
        options = PrunedOptions(stage1_tile=128, stage1_tile_filtered=256, key_capacity=cap)
        index = _pruned(X, first_stage, n_jobs=n_jobs, pruned_options=options)
        dist, ind = index.kneighbors(Q, k, chunk_size=chunk)
        assert (index.stats_["stage1_overflows"] > 0) == (cap == 1)
        np.testing.assert_array_equal(ind, ri)
        np.testing.assert_allclose(dist, rd, rtol=1e-12, atol=0)
        _check_first_stage(index, first_stage)
        assert index.stats_["clustered"]
        exact_tile = (dtype == "uint8" and k <= 32 and index.stats_["u8_dot"]
                      and ((first_stage == "amx" and amx.available_int8("amx"))
                           or first_stage == "int8"))
        assert index.stats_["exact_first_tile_per_query"] == (128 if exact_tile else 0)


@pytest.mark.parametrize("rank, no_cholesky", [(None, False), (None, True), (5, False)])
def test_randomized_pca_finds_the_leading_directions(rank, no_cholesky):
    """The numpy randomized PCA of wide data: its singular values match the
    SVD's where the spectrum decays (also through the Householder fallback
    when a Cholesky-QR step fails), and a sample of low rank (tiny
    eigenvalues: the SVD fallback) still gives orthonormal directions that
    span the sample's rows."""
    import contextlib
    from unittest import mock

    from fastnn.neighbors.pruned.projection import randomized_pca as _randomized_pca
    r = np.random.default_rng(0)
    if rank is None:
        S = (r.normal(size=(400, 60)) * 0.8 ** np.arange(60)) @ np.linalg.qr(
            r.normal(size=(1500, 60)))[0].T
    else:
        S = r.normal(size=(400, rank)) @ r.normal(size=(rank, 1500))
    S = S.astype(np.float32)
    with mock.patch.object(np.linalg, "cholesky", side_effect=np.linalg.LinAlgError) \
            if no_cholesky else contextlib.nullcontext():
        sv, Vt = _randomized_pca(S, 20, 1, np.random.RandomState(0))
    ref = np.linalg.svd(S.astype(np.float64), compute_uv=False)[:20]
    assert Vt.shape == (20, 1500)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(20), atol=1e-6)
    if rank is None:
        np.testing.assert_allclose(sv, ref, rtol=1e-3)
    else:
        np.testing.assert_allclose(sv[:rank], ref[:rank], rtol=1e-4)
        resid = S - (S @ Vt[:rank].T) @ Vt[:rank]
        assert np.abs(resid).max() < 1e-3 * np.abs(S).max()


def test_pickled_index_searches_on_another_kernel_path(tmp_path):
    """An index pickled after a search (its projection built for this CPU's
    kernel family) and loaded where that family is switched off
    (FASTNN_AMX=0 FASTNN_AVX512=0 FASTNN_AVX2=0: the portable path) rebuilds what it needs
    and gives the same answer."""
    import os
    import pickle
    import subprocess
    import sys
    r = np.random.default_rng(5)
    X = (r.random((3000, 8)) @ r.random((8, 40)) * 50).astype(np.float32)
    Q = X[:50] + r.normal(size=(50, 40)).astype(np.float32)
    index = NearestNeighborsIndex(X, backend="pruned")
    ref = index.kneighbors(Q, 4)
    (tmp_path / "index.pkl").write_bytes(pickle.dumps(index))
    np.save(tmp_path / "q.npy", Q)
    code = ("import pickle, sys, numpy as np; p = sys.argv[1]; "
            "idx = pickle.load(open(p + '/index.pkl', 'rb')); "
            "d, i = idx.kneighbors(np.load(p + '/q.npy'), 4); "
            "np.save(p + '/d.npy', d); np.save(p + '/i.npy', i); print(idx.stats_['first_stage'])")
    env = dict(os.environ, FASTNN_AMX="0", FASTNN_AVX512="0", FASTNN_AVX2="0", NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "blas-float32"
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), ref[1])
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), ref[0])


def test_kernels_parameter_is_checked():
    X = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="kernels='sse' is not one of"):
        NearestNeighborsIndex(X, kernels="sse")
    for fam in amx.FAMILIES:
        if not amx.available(fam):
            with pytest.raises(ValueError, match="cannot run"):
                NearestNeighborsIndex(X, kernels=fam)


def test_first_stage_option_is_checked():
    """``PrunedOptions.first_stage``: an unknown value, or a first stage the
    index's kernels cannot run, is a ValueError at construction; every
    first stage this CPU runs gives the brute-force answer."""
    X = np.random.default_rng(3).random((900, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="first_stage must be one of"):
        PrunedOptions(first_stage="int4")
    for bad in ("int8", "bf16"):
        with pytest.raises(ValueError, match=f"first_stage='{bad}' needs"):
            NearestNeighborsIndex(X, kernels="portable", pruned_options={"first_stage": bad})
    ref = NearestNeighborsIndex(X, backend="brute").kneighbors(X[:30] + 0.01, 4)
    from fastnn.neighbors.validation import kernel_families
    runs = ["float32"] + (["int8"] if amx.available_int8("avx512") else []) + (
        ["bf16"] if kernel_families("auto")[0] is not None else [])
    for first in runs:
        index = NearestNeighborsIndex(X, backend="pruned", pruned_options={"first_stage": first})
        got = index.kneighbors(X[:30] + 0.01, 4)
        assert index.stats_["first_stage"].endswith(first)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.one_of(st.floats(0, 10), st.sampled_from([0.0, 1.0, 5e-324, 1e-310])),
                     max_size=300),
       n_buckets=st.sampled_from([1, 2, 64]))
def test_stage3_sort_orders_like_numpy(keys, n_buckets):
    """Stage 3's bucket + insertion sort of the candidates' bounds gives
    numpy's ascending order of the keys (ties, duplicates, subnormal
    spreads, a single bucket), as a permutation of the positions."""
    from fastnn.kernels.pruned import _sort_bounds
    k = np.array(keys + [7.0], np.float64)      # (a slot past n is not read)
    n = len(keys)
    order = np.full(n + 1, -1, np.int64)
    _sort_bounds(k, n, order, np.empty(n_buckets + 1, np.int64))
    assert sorted(order[:n].tolist()) == list(range(n)) and order[n] == -1
    np.testing.assert_array_equal(k[order[:n]], np.sort(k[:n]))
