"""The exact float distance (``sqdist_float``): one fixed summation order,
eight float64 lanes then the tail in index order, bit for bit the same as a
plain Python rendering of that order, for float32 and float64 rows,
contiguous or strided, and within float64 rounding of the true value."""

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from fastnn.kernels import distances as dk


def _in_order(a, b):
    """The documented order in Python floats (IEEE float64, no fused ops)."""
    d = [float(x) - float(y) for x, y in zip(a.astype(np.float64), b.astype(np.float64))]
    n8 = len(d) // 8
    lanes = [0.0] * 8
    for t in range(8 * n8):
        lanes[t % 8] += d[t] * d[t]
    s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5])
                                                           + (lanes[6] + lanes[7]))
    for t in range(8 * n8, len(d)):
        s += d[t] * d[t]
    return s


@njit
def _pairs(A, B):
    out = np.empty(A.shape[0])
    for i in range(A.shape[0]):
        out[i] = dk.sqdist_float(A[i], B[i])
    return out


@njit
def _pairs_strided(A, B):
    out = np.empty(A.shape[0])
    for i in range(A.shape[0]):
        out[i] = dk.sqdist_float(A[i, ::2], B[i, ::3])
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(0, 70),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_sqdist_float_is_the_documented_order(n, d, dtype, seed):
    r = np.random.default_rng(seed)
    A = (r.standard_normal((n, d)) * 10.0 ** r.integers(-5, 6, (n, d))).astype(dtype)
    B = (r.standard_normal((n, d)) * 10.0 ** r.integers(-5, 6, (n, d))).astype(dtype)
    got = _pairs(A, B)
    ref = np.array([_in_order(A[i], B[i]) for i in range(n)])
    np.testing.assert_array_equal(got, ref)
    # the same values through strided views (eight scalar chains)
    A2 = np.zeros((n, 2 * d), dtype)
    A2[:, ::2] = A
    B3 = np.zeros((n, 3 * d), dtype)
    B3[:, ::3] = B
    np.testing.assert_array_equal(_pairs_strided(A2, B3), got)
    # and within float64 rounding of the exact sum (2 d u relative)
    for i in range(n):
        exact = sum((Fraction(float(x)) - Fraction(float(y))) ** 2 for x, y in zip(A[i], B[i]))
        assert abs(Fraction(got[i]) - exact) <= Fraction(2 * (d + 1) * 2.0 ** -53) * exact
        assert math.isfinite(got[i])
