"""Exact uint8 distances in the dot-product form (AVX-512 VNNI where the
CPU has it, a plain compiled loop elsewhere) against the direct int64 sum."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn.kernels import distances as dk

CODE = """
import numpy as np
from numba import njit
from fastnn.kernels import distances as dk

@njit
def dists(Q, X):
    Q8 = np.empty(Q.shape, np.int8)
    QS = np.empty(Q.shape[0], np.int64)
    QN = np.empty(Q.shape[0], np.int64)
    dk.u8_row_stats(Q, QS, QN, Q8)
    XS = np.empty(X.shape[0], np.int64)
    XN = np.empty(X.shape[0], np.int64)
    dk.u8_row_stats(X, XS, XN, np.empty((0, 0), np.int8))
    out = np.empty((Q.shape[0], X.shape[0]))
    for i in range(Q.shape[0]):
        for j in range(X.shape[0]):
            out[i, j] = dk._sqdist_u8(Q8[i], QN[i], X[j], XS[j], XN[j])
    return out

def check():
    rng = np.random.default_rng(0)
    for d in (1, 63, 64, 65, 200, 3072):
        X = rng.integers(0, 256, (9, d), dtype=np.uint8)
        Q = rng.integers(0, 256, (4, d), dtype=np.uint8)
        X[0] = 255
        Q[0] = 0
        ref = ((Q[:, None, :].astype(np.int64) - X[None].astype(np.int64)) ** 2).sum(-1)
        np.testing.assert_array_equal(dists(Q, X), ref.astype(np.float64))
    return dk.VNNI
"""


def test_uint8_dot_product_distances_are_exact():
    ns = {}
    exec(CODE, ns)
    ns["check"]()


def test_fallback_loop_without_vnni(tmp_path):
    """With ``FASTNN_VNNI=0`` (a fresh numba cache: the intrinsic is
    compiled again) the plain loop gives the same exact distances."""
    env = dict(os.environ, FASTNN_VNNI="0", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CODE + "\nprint(check())"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not dk.VNNI, reason="no AVX-512 VNNI here: the pruned search keeps "
                    "the direct uint8 sums")
def test_pruned_uint8_search_uses_the_dot_product_form_exactly(rng):
    from fastnn import NearestNeighborsIndex
    X = rng.integers(0, 256, (1200, 130), dtype=np.uint8)
    X[600:700] = X[:100]                                   # exact ties
    Q = np.vstack([X[:7], rng.integers(0, 256, (30, 130), dtype=np.uint8)])
    index = NearestNeighborsIndex(X, backend="pruned")
    d1, i1 = index.kneighbors(Q, 4)
    assert index.stats_["u8_dot"]
    portable = NearestNeighborsIndex(X, backend="pruned", kernels="portable")
    d0, i0 = portable.kneighbors(Q, 4)
    assert not portable.stats_["u8_dot"]                  # the direct sums
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    d2, i2 = index.kneighbors(Q, 4, backend="brute")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("d", [1, 70, 3072, 33000])
def test_fused_index_stats_equal_the_int64_sums(d):
    """The projection's one-pass uint8 statistics (int32 lanes): |a - c|^2,
    the row sums and sums of squares equal int64 numpy sums, also at the
    largest row length the caller allows (d * 255**2 < 2**31) with extreme
    rows."""
    rng = np.random.default_rng(d)
    A = rng.integers(0, 256, (7, d), dtype=np.uint8)
    A[0] = 255
    A[1] = 0
    c = np.rint(rng.uniform(0, 255, d))
    c[: d // 2] = 0.0
    assert d * 255 * 255 < 2 ** 31
    c2, s, sq = np.empty(7), np.empty(7, np.int64), np.empty(7, np.int64)
    dk.u8_centred_stats(A, c, c2, s, sq)
    A64 = A.astype(np.int64)
    np.testing.assert_array_equal(c2, ((A64 - c.astype(np.int64)) ** 2).sum(1).astype(np.float64))
    np.testing.assert_array_equal(s, A64.sum(1))
    np.testing.assert_array_equal(sq, (A64 ** 2).sum(1))
