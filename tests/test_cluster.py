"""The clustering kernels against numpy: nearest centroid (first of equal
minima, like argmin), the stable counting order (like a stable argsort) and
the per-label sums."""

import numpy as np
from hypothesis import given, settings, strategies as st

from fastnn.kernels import cluster as kc


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), m=st.integers(1, 40), ties=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_nearest_from_products_is_numpy_argmin(n, m, ties, seed):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((n, m)).astype(np.float32)
    cn = rng.uniform(0, 2, m).astype(np.float32)
    if ties:       # small integers: many exactly equal values
        P = rng.integers(-2, 3, (n, m)).astype(np.float32)
        cn = rng.integers(0, 3, m).astype(np.float32)
    out = np.full(n, -1, np.int64)
    kc.nearest_from_products(P, cn, out)
    # (the kernel's arithmetic is float64)
    ref = (cn.astype(np.float64)[None, :] - 2.0 * P.astype(np.float64)).argmin(axis=1)
    np.testing.assert_array_equal(out, ref)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 500), nc=st.integers(1, 30), seed=st.integers(0, 2 ** 16))
def test_counting_order_is_a_stable_argsort(n, nc, seed):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, nc, n)
    perm = np.full(n, -1, np.int64)
    starts = np.full(nc + 1, -7, np.int64)
    kc.counting_order(lab, nc, perm, starts)
    np.testing.assert_array_equal(perm, np.argsort(lab, kind="stable"))
    np.testing.assert_array_equal(
        starts, np.concatenate(([0], np.cumsum(np.bincount(lab, minlength=nc)))))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 400), d=st.integers(1, 33), nc=st.integers(1, 20),
       seed=st.integers(0, 2 ** 16))
def test_centroid_sums_are_numpy_sums(n, d, nc, seed):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n, d)).astype(np.float32)
    lab = rng.integers(0, nc, n)
    sums = np.full((nc, d), np.nan)
    cnt = np.full(nc, -1, np.int64)
    kc.centroid_sums(S, lab, sums, cnt)
    np.testing.assert_array_equal(cnt, np.bincount(lab, minlength=nc))
    ref = np.zeros((nc, d))
    np.add.at(ref, lab, S.astype(np.float64))
    np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-12)
