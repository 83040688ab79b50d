"""The tile kernels (AMX and AVX-512 families) against numpy: rounding,
products within the stated bound, the fused filter equal to filtering the
stored product, exact integer products, and argument checks (a wrong size
must never reach the kernels). Every test of a product runs once per family
this CPU can run."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn.kernels import amx

# the families this CPU runs (an empty list skips those tests, with pytest's
# "got empty parameter set" reason, on CPUs with neither)
FAMILIES_HERE = [f for f in amx.FAMILIES if amx.available(f)]
INT8_FAMILIES_HERE = [f for f in amx.FAMILIES if amx.available_int8(f)]
each_family = pytest.mark.parametrize("family", FAMILIES_HERE)


def _bf16_reference(x):
    """Nearest bfloat16 (ties to even) by float64 arithmetic on the
    neighbouring candidates; subnormal results flushed to zero."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for idx, v in np.ndenumerate(x):
        if v == 0:
            out[idx] = 0.0
            continue
        e = np.floor(np.log2(abs(v)))
        ulp = 2.0 ** (e - 7)
        lo = np.floor(abs(v) / ulp) * ulp
        hi = lo + ulp
        if abs(v) - lo < hi - abs(v):
            r = lo
        elif abs(v) - lo > hi - abs(v):
            r = hi
        else:                          # tie: the even mantissa
            r = lo if int(round(lo / ulp)) % 2 == 0 else hi
        r = np.copysign(r, v)
        out[idx] = 0.0 if abs(r) < 2.0 ** -126 else r
    return out


def test_bf16_rounding_is_nearest_even():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
                        # exact ties: odd integers in [257, 511] (spacing 2 there)
                        np.arange(257, 512, 2.0), -np.arange(257, 512, 2.0) * 2.0 ** -60,
                        [0.0, -0.0, 1e-39, -1e-39, 2.0 ** -126, 3.0e38]]).astype(np.float32)
    got = amx.from_bf16(amx.bf16_bits(x)).astype(np.float64)
    np.testing.assert_array_equal(got, _bf16_reference(x.astype(np.float64)))


def test_to_bf16_pads_and_checks():
    a = np.ones((3, 5), np.float32)
    b = amx.to_bf16(a)
    assert b.shape == (3, 32) and (b[:, 5:] == 0).all() and (b[:, :5] == 0x3F80).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        amx.to_bf16(a, k=40)
    with pytest.raises(ValueError, match="multiple of 32"):
        amx.pack_b(np.zeros((4, 40), np.uint16))



@pytest.mark.parametrize("shape, dtype", [((0,), np.uint8), (7, np.float32),
                                          ((3, 5), np.uint16), ((1 << 18, 5), np.int8),
                                          ((33, 2, 16, 2), np.uint16)])
def test_aligned_arrays_start_on_a_cache_line(shape, dtype):
    for zero in (False, True):
        a = amx.aligned(shape, dtype, zero=zero)
        assert a.size == 0 or a.ctypes.data % amx.LINE == 0   # (nothing reads an empty one)
        assert a.shape == ((shape,) if np.ndim(shape) == 0 else shape) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        if zero:
            assert not a.any()
    # the packed operands the tiles read come out aligned too (the layout
    # itself is checked against numpy elsewhere)
    rng = np.random.default_rng(0)
    B = amx.to_bf16(rng.standard_normal((100_000, 40)).astype(np.float32))
    assert B.ctypes.data % amx.LINE == 0
    assert amx.pack_b(B).ctypes.data % amx.LINE == 0
    assert amx.pack_b_s8(rng.integers(-128, 128, (70_000, 70)).astype(np.int8)).ctypes.data \
        % amx.LINE == 0


def _operands(rng, mq, n, d):
    A = amx.to_bf16(rng.standard_normal((mq, d)).astype(np.float32))
    B = amx.to_bf16(rng.standard_normal((n, d)).astype(np.float32))
    return A, B


def _exact(A, B):
    a = amx.from_bf16(A).astype(np.float64)
    b = amx.from_bf16(B).astype(np.float64)
    return a @ b.T, np.abs(a) @ np.abs(b).T


@each_family
@settings(max_examples=25, deadline=None)
@given(mq32=st.integers(1, 4), n=st.integers(1, 300), d=st.integers(1, 130),
       seed=st.integers(0, 2 ** 16))
def test_gemm_within_the_rounding_bound(mq32, n, d, seed, family):
    """Every tile of the product lies within (K + 1) u32 sum |a b| of the
    exact product of the bfloat16 operands (the bound the search uses)."""
    rng = np.random.default_rng(seed)
    mq = 32 * mq32
    A, B = _operands(rng, mq, n, d)
    Bp = amx.pack_b(B)
    n_pad = Bp.shape[0] * 16
    C = np.full((mq, n_pad), np.nan, np.float32)
    amx.gemm(A, Bp, C, n_pad, family=family)
    exact, mag = _exact(A, B)
    K = A.shape[1]
    err = np.abs(C[:, :n].astype(np.float64) - exact)
    assert np.all(err <= (K + 1) * 2.0 ** -24 * mag)
    assert (C[:, n:] == 0).all()                     # zero-padded columns


@each_family
def test_gemm_column_offset(family):
    rng = np.random.default_rng(1)
    A, B = _operands(rng, 64, 1000, 70)
    Bp = amx.pack_b(B)
    full = np.empty((64, 1024), np.float32)
    amx.gemm(A, Bp, full, 1024, family=family)
    part = np.empty((64, 256), np.float32)
    amx.gemm(A, Bp, part, 256, j0=448, family=family)
    np.testing.assert_array_equal(part, full[:, 448:704])


@each_family
@settings(max_examples=25, deadline=None)
@given(mq32=st.integers(1, 3), n=st.integers(1, 700), d=st.integers(1, 100),
       q=st.floats(-0.1, 1.1), seed=st.integers(0, 2 ** 16))
def test_gemm_filter_equals_filtering_the_product(mq32, n, d, q, seed, family):
    """The fused filter keeps exactly the values <= T[r] of the stored
    product, same bits, in column order (thresholds from none to all)."""
    rng = np.random.default_rng(seed)
    mq = 32 * mq32
    A, B = _operands(rng, mq, n, d)
    Bp = amx.pack_b(B)
    nj = Bp.shape[0] * 16
    j0 = 32 * int(rng.integers(0, nj // 32))
    nj -= j0
    C = np.empty((mq, nj), np.float32)
    amx.gemm(A, Bp, C, nj, j0, family=family)
    qs = np.clip(q + 0.05 * rng.standard_normal(mq), 0, 1)
    T = np.array([np.quantile(C[r], qs[r]) for r in range(mq)], np.float32)
    T[0] = -np.inf
    OK = np.full((mq, nj + 7), np.nan, np.float32)
    OJ = np.full((mq, nj + 7), -1, np.int32)
    CNT = np.full(mq, 99, np.int32)
    amx.gemm_filter(A, Bp, nj, j0, T, OK, OJ, CNT, family=family)
    for r in range(mq):
        cols = np.nonzero(C[r] <= T[r])[0]
        assert CNT[r] == len(cols)
        np.testing.assert_array_equal(OJ[r, :CNT[r]], cols)
        np.testing.assert_array_equal(OK[r, :CNT[r]], C[r, cols])
    # (the AVX-512 kernels store whole compressed vectors: nothing lands
    # past the nj values a row may hold)
    assert np.isnan(OK[:, nj:]).all() and (OJ[:, nj:] == -1).all()



@each_family
def test_filter_plan_rows_and_columns(family):
    """A plan over a taller A and wider outputs filters the rows and columns
    it is given, like gemm_filter on those slices; ranges outside its arrays
    are refused before the tiles see them."""
    rng = np.random.default_rng(5)
    A, B = _operands(rng, 160, 300, 70)
    Bp = amx.pack_b(B)
    T = np.empty(96, np.float32)
    OK = amx.aligned((96, 256), np.float32)
    OJ = amx.aligned((96, 256), np.int32)
    CNT = np.full(96, 7, np.int32)
    plan = amx.FilterPlan(A, Bp, T, OK, OJ, CNT, family=family)
    for q0, mq, j0, nj in ((0, 96, 0, 256), (64, 64, 32, 256), (128, 32, 288, 32),
                           (37, 32, 64, 96)):
        T[:] = rng.uniform(-5, 5, 96).astype(np.float32)
        plan(q0, mq, j0, nj)
        ref_ok = np.full((mq, nj), np.nan, np.float32)
        ref_oj = np.full((mq, nj), -1, np.int32)
        ref_cnt = np.empty(mq, np.int32)
        amx.gemm_filter(np.ascontiguousarray(A[q0:q0 + mq]), Bp, nj, j0, T[:mq].copy(), ref_ok,
                        ref_oj, ref_cnt, family=family)
        np.testing.assert_array_equal(CNT[:mq], ref_cnt)
        for r in range(mq):
            np.testing.assert_array_equal(OJ[r, :CNT[r]], ref_oj[r, :ref_cnt[r]])
            np.testing.assert_array_equal(OK[r, :CNT[r]], ref_ok[r, :ref_cnt[r]])
    for bad in ((0, 128, 0, 32), (140, 32, 0, 32), (0, 16, 0, 32), (0, 32, 16, 32),
                (0, 32, 288, 64), (0, 32, 0, 288), (-32, 32, 0, 32)):
        with pytest.raises(ValueError, match="do not fit"):
            plan(*bad)
    with pytest.raises(ValueError, match="do not fit"):
        amx.FilterPlan(A, Bp, T, OK, OJ, CNT[:32], family=family)
    with pytest.raises(TypeError):
        amx.FilterPlan(A, Bp, T.astype(np.float64), OK, OJ, CNT, family=family)


@each_family
def test_wrong_arguments_are_refused(family):
    rng = np.random.default_rng(2)
    A, B = _operands(rng, 32, 100, 40)
    Bp = amx.pack_b(B)
    C = np.empty((32, 128), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        amx.gemm(A, Bp, C, 160)                      # beyond the packed columns
    with pytest.raises(ValueError, match="do not fit"):
        amx.gemm(A[:16], Bp, C[:16], 128)            # rows not a multiple of 32
    with pytest.raises(ValueError, match="do not fit"):
        amx.gemm(A, Bp, np.empty((32, 64), np.float32), 128)   # C too narrow
    with pytest.raises(TypeError, match="C-contiguous"):
        amx.gemm(A, Bp, np.empty((32, 128), np.float64), 128, family=family)
    with pytest.raises(TypeError, match="C-contiguous"):
        amx.gemm(np.asfortranarray(A), Bp, C, 128, family=family)
    T = np.zeros(32, np.float32)
    OK = np.empty((32, 128), np.float32)
    OJ = np.empty((32, 128), np.int32)
    CNT = np.empty(32, np.int32)
    with pytest.raises(ValueError, match="do not fit"):
        amx.gemm_filter(A, Bp, 128, 0, T[:16], OK, OJ, CNT, family=family)
    with pytest.raises(ValueError, match="do not fit"):
        amx.gemm_filter(A, Bp, 128, 0, T, OK, np.empty((32, 64), np.int32), CNT, family=family)
    with pytest.raises(TypeError):
        amx.gemm_filter(A, Bp, 128, 0, T, OK, OJ.astype(np.int64), CNT, family=family)


def _family_in_subprocess(**switches):
    code = ("from fastnn.kernels import amx; "
            "print(amx.kernel_family('bf16'), amx.kernel_family('u8s8'), amx.available())")
    env = dict(os.environ, **switches)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


def test_switches_turn_families_off():
    """FASTNN_AMX=0 leaves no AMX; FASTNN_AMX=0 FASTNN_AVX512=0 leaves no tile
    kernels at all (the portable path)."""
    fam_bf16, fam_int8, _ = _family_in_subprocess(FASTNN_AMX="0")
    assert "amx" not in (fam_bf16, fam_int8)
    assert _family_in_subprocess(FASTNN_AMX="0", FASTNN_AVX512="0") == ["None", "None", "False"]


def test_forcing_a_family_this_cpu_cannot_run_is_a_clear_error():
    missing = [f for f in amx.FAMILIES if not amx.available(f)]
    A = amx.to_bf16(np.ones((32, 32), np.float32))
    Bp = amx.pack_b(A)
    for fam in missing:
        with pytest.raises(ValueError, match="cannot run here"):
            amx.gemm(A, Bp, np.empty((32, 32), np.float32), 32, family=fam)
    with pytest.raises(ValueError, match="kernel family must be one of"):
        amx.gemm(A, Bp, np.empty((32, 32), np.float32), 32, family="sse")


def test_stage1_rows_round_like_bf16_bits():
    """The numba stage-1 rows (index: packed for the tiles; queries: row
    major) hold exactly ``bf16_bits`` of the vectors (of ``-2 h`` for
    queries), three ones and three pieces of ``|h|^2`` within 2**-22;
    ``F = E1 + |W - h|`` and ``a16 = |h|``."""
    from fastnn.kernels import projection as dproj
    rng = np.random.default_rng(3)
    n, mp = 70, 23
    W = (rng.standard_normal((n, mp)) * 2.0 ** rng.integers(-130, 20, (n, mp)))
    W = W.astype(np.float32)
    W[0, :8] = (np.arange(128, 136) + 0.5) * 2.0 ** -7            # exact ties
    W[1, :4] = [1e-39, -1e-39, 0.0, -0.0]                           # subnormals, zeros
    E1 = rng.uniform(0, 1e-6, n)
    K = 32
    h_bits = amx.bf16_bits(W)
    h = amx.from_bf16(h_bits).astype(np.float64)
    nrm = (h * h).sum(1)
    Bp = np.zeros((-(-n // 32) * 2, K // 2, 16, 2), np.uint16)
    F = np.empty(n)
    a16 = np.empty(n)
    perm = np.arange(n)
    dproj.stage1_rows_index(W, W.view(np.uint32), E1, perm, 0, n, np.empty(K, np.uint16), Bp, F, a16)
    rows = Bp.transpose(0, 2, 1, 3).reshape(-1, K)[:n]
    np.testing.assert_array_equal(rows[:, :mp], h_bits)
    assert (rows[:, mp:mp + 3] == 0x3F80).all() and (rows[:, mp + 6:] == 0).all()
    pieces = amx.from_bf16(rows[:, mp + 3:mp + 6]).astype(np.float64).sum(1)
    assert np.all(np.abs(pieces - nrm) <= 2.0 ** -22 * nrm)
    np.testing.assert_allclose(F, E1 + np.sqrt(((W - h) ** 2).sum(1)), rtol=1e-9)
    np.testing.assert_allclose(a16, np.sqrt(nrm), rtol=1e-12)
    # in a given order, written in two position ranges: position p holds row
    # perm[p] (the clustered index), F and a16 stay per row
    perm = rng.permutation(n)
    Bq = np.full_like(Bp, 7)
    F2 = np.empty(n)
    a2 = np.empty(n)
    for p0, p1 in ((0, 37), (37, n)):
        dproj.stage1_rows_index(W, W.view(np.uint32), E1, perm, p0, p1, np.empty(K, np.uint16), Bq,
                             F2, a2)
    np.testing.assert_array_equal(Bq.transpose(0, 2, 1, 3).reshape(-1, K)[:n], rows[perm])
    np.testing.assert_array_equal(F2, F)
    np.testing.assert_array_equal(a2, a16)
    A = np.zeros((n, K), np.uint16)
    dproj.stage1_rows_query(W, W.view(np.uint32), E1, A, F, a16)
    np.testing.assert_array_equal(A[:, :mp], amx.bf16_bits(-2.0 * h))
    assert (A[:, mp + 3:mp + 6] == 0x3F80).all() and (A[:, mp + 6:] == 0).all()
    pieces = amx.from_bf16(A[:, mp:mp + 3]).astype(np.float64).sum(1)
    assert np.all(np.abs(pieces - nrm) <= 2.0 ** -22 * nrm)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 100), k4=st.integers(1, 3), nrows=st.integers(0, 70),
       seed=st.integers(0, 2 ** 16))
def test_packing_kernels_equal_the_numpy_packing(n, k4, nrows, seed):
    """The numba packer used by the clustered search equals amx's numpy
    packing: rows of int8 data in a given order (``pack_rows_s8``, padded
    values and columns zero)."""
    from fastnn.kernels import pruned as dp
    r = np.random.default_rng(seed)
    d = 64 * k4 - int(r.integers(0, 64))
    A = r.integers(-128, 128, (n, d)).astype(np.int8)
    rows = r.integers(0, n, min(nrows, 64))
    out = np.full((4, 16 * k4, 16, 4), 99, np.int8)
    dp.pack_rows_s8(A, rows, out)
    ref = amx.pack_b_s8(A[rows], 64 * k4)
    np.testing.assert_array_equal(out[:ref.shape[0]], ref)
    assert not out[ref.shape[0]:].any()


@pytest.mark.parametrize("family", INT8_FAMILIES_HERE)
def test_gather_rows_and_exact_first_tile(family):
    """The exact first tile of a uint8 block: gathered rows times the
    block's queries - 128 on AMX integer tiles give |q - x|^2 exactly, the
    top-k per query by (distance, row), every row marked measured."""
    from fastnn.kernels import pruned as dp
    r = np.random.default_rng(3)
    X = r.integers(0, 4, (500, 70)).astype(np.uint8)          # few levels: ties
    Q = np.vstack([X[:5], r.integers(0, 4, (35, 70)).astype(np.uint8)])
    rows = np.sort(r.choice(500, 64, replace=False))
    Xw = np.zeros((64, 128), np.uint8)
    dp.gather_rows(X, rows, Xw)
    np.testing.assert_array_equal(Xw[:, :70], X[rows])
    assert not Xw[:, 70:].any()
    Q8 = (Q.astype(np.int16) - 128).astype(np.int8)
    qrow = np.arange(len(Q))
    Bq = np.empty((4, 32, 16, 4), np.int8)
    dp.pack_rows_s8(Q8, qrow, Bq)
    C = np.empty((64, 64), np.int32)
    amx.gemm_u8s8(Xw, Bq, C, 64, family=family)
    XS = X.sum(1, dtype=np.int64)
    XN = (X.astype(np.int64) ** 2).sum(1)
    QN = (Q.astype(np.int64) ** 2).sum(1)
    k, nb = 4, len(Q)
    kd, ki = np.empty((nb, k)), np.empty((nb, k), np.int64)
    kc = np.zeros(nb, np.int64)
    lim1, sd = np.empty(nb), np.empty((nb, k))
    si, sc = np.empty((nb, k), np.int64), np.empty(nb, np.int64)
    seen = np.zeros((500, 1), np.uint64)
    ex = dp.ExactInputs(Q, X, dp.ROWS_TYPED, True, True, True, Q8, QN, XS, XN, qrow)
    st = dp.Stage1State(seed_keys=sd, seed_rows=si, seed_counts=sc, top_dist=kd, top_rows=ki,
                        top_counts=kc, key_limits=lim1, n_measured=np.zeros(nb, np.int64),
                        cand_keys=np.empty((nb, 1), np.float32),
                        cand_rows=np.empty((nb, 1), np.int64), n_cand=np.zeros(nb, np.int64),
                        row_buffer=np.empty(k, np.int64), measured=seen)
    dp.window_exact(C, rows, 0, nb, ex, dp.KeyBounds(1.0, np.zeros(nb), np.zeros(nb)), st)
    D = ((Q[:, None, :].astype(np.int64) - X[rows][None].astype(np.int64)) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(rows, D.shape), D), axis=1)[:, :k]
    np.testing.assert_array_equal(ki, rows[order])
    np.testing.assert_array_equal(kd, np.take_along_axis(D, order, 1))
    assert np.all(kc == k) and np.all(sd == -np.inf) and np.all(sc == k)
    bits = np.unpackbits(seen.view(np.uint8), axis=1, bitorder="little")[:, :nb]
    assert bits[rows].all() and bits.sum() == len(rows) * nb


def _int8_operands(rng, nq, n, d, K, family="avx512"):
    """Stage-1 vectors of varied magnitude (zero rows, tiny and huge ones)
    and the int8 operand the numba kernels make of them."""
    from fastnn.kernels import projection as dproj
    W = (rng.standard_normal((n + nq, d)) * 2.0 ** rng.integers(-40, 3, (n + nq, 1)))
    W = W.astype(np.float32)
    W[0] = 0.0
    W[1, :3] = [1e-30, -3e-31, 0.0][:d]
    E1 = rng.uniform(0, 1e-7, n + nq)
    B8 = amx.aligned((-(-n // 32) * 2, K // 4, 16, 4), np.int8, zero=True)
    n_pad = B8.shape[0] * 16
    XN, XS = np.zeros(n_pad, np.float32), np.zeros(n_pad, np.float32)
    XC = np.zeros(n_pad, np.int32)
    F, a8, h_last = np.empty(n), np.empty(n), np.empty(n)
    perm = rng.permutation(n)
    for p0, p1 in ((0, n // 3), (n // 3, n)):
        dproj.stage1_int8_index(W[:n], E1[:n], perm, p0, p1, np.empty(K, np.int64), B8, XN, XS,
                                XC, F, a8, h_last)
    A8 = amx.aligned((-(-nq // 32) * 32, K), np.uint8, zero=True)
    QN, QG = np.zeros(A8.shape[0], np.float32), np.zeros(A8.shape[0], np.float32)
    Fq, aq, hq_last = np.empty(nq), np.empty(nq), np.empty(nq)
    dproj.stage1_int8_query(W[n:], E1[n:], A8, QN, QG, Fq, aq, hq_last, family == "avx2")
    return W, E1, perm, (B8, XN, XS, XC, F, a8, h_last), (A8, QN, QG, Fq, aq, hq_last)


INT8_FILTER_FAMILIES_HERE = [f for f in amx.INT8_FILTER_FAMILIES if amx.available_int8(f)]


@pytest.mark.skipif(not INT8_FILTER_FAMILIES_HERE, reason="no AVX2 or AVX-512 VNNI here")
@pytest.mark.parametrize("family", INT8_FILTER_FAMILIES_HERE)
@settings(max_examples=25, deadline=None)
@given(nq32=st.integers(1, 2), n=st.integers(2, 300), d=st.integers(1, 127),
       q=st.floats(-0.1, 1.1), seed=st.integers(0, 2 ** 16))
def test_int8_first_stage_keys_are_within_their_bounds(nq32, n, d, q, seed, family):
    """The int8 operand (numba) and the int8 filter kernel: each row is
    ``h = s v`` with integers ``|v| <= 127`` within ``F - E1`` of its float32
    vector, ``XN``/``QN``/``XC``/``QG`` are its norms, shifted sums and
    scales; the kernel keeps exactly the columns whose key is ``<= T`` (in
    column order), and every key lies within ``int8_key_slack`` of the
    float64 ``|h_q - h_x|^2``; ``int8_keys`` (the dense first tile) gives
    the kernel's keys. The AVX2 kernels take 7-bit query rows (``v + 64``,
    ``|v| <= 62``)."""
    from fastnn.kernels import projection as dproj
    from fastnn.neighbors.pruned.search import int8_key_slack
    rng = np.random.default_rng(seed)
    nq, K = 32 * nq32, (d + 1 + 63) // 64 * 64
    W, E1, perm, (B8, XN, XS, XC, F, a8, h_last), (A8, QN, QG, Fq, aq, hq_last) = \
        _int8_operands(rng, nq, n, d, K, family)
    shift, levels = (64, 62) if family == "avx2" else (128, 127)
    V = B8.transpose(0, 2, 1, 3).reshape(-1, K)[:n].astype(np.int64)   # position order
    assert np.abs(V).max() <= 127 and (V[:, d:] == 0).all()
    H = V[:, :d] * XS[:n, None].astype(np.float64)
    rows = perm                                      # position p holds row perm[p]
    assert np.all(np.sqrt(((W[rows] - H) ** 2).sum(1)) + E1[rows] <= F[rows])
    np.testing.assert_allclose(F[rows], E1[rows] + np.sqrt(((W[rows] - H) ** 2).sum(1)),
                               rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(XN[:n], ((H ** 2).sum(1)).astype(np.float32))
    np.testing.assert_array_equal(XC[:n], 128 * V.sum(1))
    np.testing.assert_array_equal(h_last[rows], H[:, -1])
    Vq = A8[:nq].astype(np.int64) - shift
    assert np.abs(Vq).max() <= levels and (Vq[:, d:] == 0).all()
    Hq = Vq[:, :d] * (-0.5 * QG[:nq, None].astype(np.float64))
    assert np.all(np.sqrt(((W[n:] - Hq) ** 2).sum(1)) + E1[n:] <= Fq)
    exact = ((Hq[:, None, :] - H[None]) ** 2).sum(-1)
    slack = int8_key_slack(aq, a8.max())[:, None]
    S = np.empty((nq, B8.shape[0] * 16), np.int32)
    amx.gemm_u8s8(A8, B8, S, S.shape[1], family=family)
    np.testing.assert_array_equal(S[:, :n], A8.astype(np.int64) @ V.T)
    G = np.empty((nq, n), np.float32)
    dproj.int8_keys(S, nq, n, QN, QG, XN, XS, XC, 1 if family == "avx2" else 0, G)
    assert np.all(np.abs(G - exact) <= slack)
    T = np.array([np.quantile(G[r], min(max(q, 0), 1)) for r in range(nq)], np.float32)
    T[0] = -np.inf
    width = B8.shape[0] * 16
    OK = np.full((nq, width), np.nan, np.float32)
    OJ = np.full((nq, width), -1, np.int32)
    CNT = np.full(nq, 99, np.int32)
    amx.Int8FilterPlan(A8, B8, QN, QG, XN, XS, XC, T, OK, OJ, CNT, family=family)(0, nq, 0,
                                                                                width)
    for r in range(nq):
        js = OJ[r, :CNT[r]]
        real = js[js < n]
        np.testing.assert_array_equal(real, np.nonzero(G[r] <= T[r])[0])
        np.testing.assert_array_equal(OK[r, :len(real)], G[r, real])


@pytest.mark.parametrize("family", INT8_FILTER_FAMILIES_HERE)
def test_int8_filter_plan_checks_its_arrays(family):
    rng = np.random.default_rng(4)
    _, _, _, (B8, XN, XS, XC, *_), (A8, QN, QG, *_) = _int8_operands(rng, 64, 100, 30, 64,
                                                                     family)
    T = np.zeros(64, np.float32)
    OK = np.empty((64, 128), np.float32)
    OJ = np.empty((64, 128), np.int32)
    CNT = np.empty(64, np.int32)

    def plan_of(*arrays):
        return amx.Int8FilterPlan(*arrays, T, OK, OJ, CNT, family=family)

    plan = plan_of(A8, B8, QN, QG, XN, XS, XC)
    for bad in ((0, 96, 0, 32), (0, 16, 0, 32), (0, 32, 16, 32), (0, 32, 96, 64)):
        with pytest.raises(ValueError, match="do not fit"):
            plan(*bad)
    with pytest.raises(ValueError, match="do not fit"):
        plan_of(A8, B8, QN[:32], QG, XN, XS, XC)
    with pytest.raises(ValueError, match="do not fit"):
        plan_of(A8, B8, QN, QG, XN[:64], XS, XC)
    with pytest.raises(TypeError, match="C-contiguous"):
        plan_of(A8, B8, QN, QG, XN, XS.astype(np.float64), XC)
    with pytest.raises(TypeError, match="C-contiguous"):
        plan_of(A8.view(np.int8), B8, QN, QG, XN, XS, XC)


@pytest.mark.skipif(not amx.available_int8("avx2"), reason="no AVX2 here")
def test_avx2_int8_products_refuse_operands_that_would_saturate():
    """The AVX2 int8 product sums uint8 x int8 pairs in int16: A above 126
    could saturate them (a wrong answer), so it is refused; up to 126 the
    sums equal numpy's."""
    rng = np.random.default_rng(6)
    A = amx.aligned((32, 64), np.uint8)
    A[:] = rng.integers(0, 127, (32, 64))
    A[0, :] = 126
    B = rng.integers(-128, 128, (64, 64)).astype(np.int8)
    B[0, :] = -128
    C = np.empty((32, 64), np.int32)
    amx.gemm_u8s8(A, amx.pack_b_s8(B), C, 64, family="avx2")
    np.testing.assert_array_equal(C, A.astype(np.int64) @ B.T.astype(np.int64))
    A[3, 5] = 127
    with pytest.raises(ValueError, match="up to 126"):
        amx.gemm_u8s8(A, amx.pack_b_s8(B), C, 64, family="avx2")
    with pytest.raises(ValueError, match="up to 126"):
        amx.Int8FilterPlan(A, amx.pack_b_s8(B), np.zeros(32, np.float32),
                           np.zeros(32, np.float32), np.zeros(64, np.float32),
                           np.zeros(64, np.float32), np.zeros(64, np.int32),
                           np.zeros(32, np.float32), np.empty((32, 64), np.float32),
                           np.empty((32, 64), np.int32), np.empty(32, np.int32), family="avx2")


_CACHED_PRODUCT = """
import json, numpy as np
from fastnn.kernels import amx, ir_cache
fams = [f for f in amx.FAMILIES + amx.INT8_FILTER_FAMILIES if amx.available_int8(f)]
fam = fams[0]
rng = np.random.default_rng(7)
A = rng.integers(0, amx.AVX2_A_MAX + 1, (64, 256), dtype=np.uint8)
B = rng.integers(-128, 128, (70, 256), dtype=np.int8)
C = np.zeros((64, 96), np.int32)
amx.gemm_u8s8(A, amx.pack_b_s8(B, 256), C, 96, family=fam)
ok = bool(np.array_equal(C[:, :70], A.astype(np.int64) @ B.T.astype(np.int64)))
print("JSON" + json.dumps(dict(ok=ok, compiles=amx._state.get("ir_compiles", 0),
                               counts=ir_cache.counts(), folder=ir_cache.cache_dir())))
"""


def _cached_product(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    res = subprocess.run([sys.executable, "-c", _CACHED_PRODUCT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("JSON"))
    return json.loads(line[4:])


@pytest.mark.skipif(not any(amx.available_int8(f) for f in amx.FAMILIES + amx.INT8_FILTER_FAMILIES),
                    reason="no int8 product kernels on this CPU")
def test_ir_kernels_machine_code_is_cached_for_the_next_process(tmp_path):
    """The LLVM IR kernels' object code goes to the cache beside numba's
    ($NUMBA_CACHE_DIR/fastnn_ir here): the first process compiles and
    stores, the next loads and compiles nothing; both products equal
    numpy's. A damaged entry (its checksum fails) is compiled again and
    replaced, not handed to LLVM."""
    first = _cached_product(tmp_path)
    assert first["ok"] and first["compiles"] >= 1 and first["counts"][1] == first["compiles"]
    assert first["folder"] == str(tmp_path / "fastnn_ir")
    second = _cached_product(tmp_path)
    assert second["ok"] and second["compiles"] == 0 and second["counts"] == [first["compiles"], 0]
    for entry in (tmp_path / "fastnn_ir").iterdir():
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    damaged = _cached_product(tmp_path)
    assert damaged["ok"] and damaged["compiles"] == first["compiles"]
    assert _cached_product(tmp_path)["compiles"] == 0
