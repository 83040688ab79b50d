"""Numba kernels that finish the pruned search's projection: coordinates,
residual norms and their proven error bounds (``finish_projection``), the
int8-digit products combined (``combine_digits``), and the bfloat16 rows of
the stage-1 tile products (``stage1_rows_index`` / ``stage1_rows_query``).
"""

import math

import numpy as np
from numba import njit

from .distances import _prefetch_row

# the stage-1 rows are gathered in cluster order (random rows): prefetch this
# many positions ahead
_PF = 6

# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _residual(zz2, c2, e_z, c2_err):
    """Residual norm ``sqrt(c2 - zz2)`` beyond a cut and the error bound of
    the stored vector (projected coordinates + residual) up to that cut."""
    rr = math.sqrt(max(c2 - zz2, 0.0))
    delta_sq = e_z * (2.0 * math.sqrt(zz2) + e_z) + c2_err
    e_r = math.sqrt(delta_sq)
    if rr > 0.0:
        e_r = min(e_r, delta_sq / rr)
    # the stored float32 coordinates add at most u32 * |w|
    f32 = 1.01 * 2.0 ** -24 * math.sqrt(max(c2, zz2))
    return rr, e_z + e_r + 2.0 * 2.0 ** -53 * rr + f32


@njit(cache=True, nogil=True)
def finish_projection(Zt, c2, scale, exact, d, delta, m1, mh, W1, Z2, r, E, E1, a1, nx1):
    """Per row of a projected tile ``Zt`` (``(a - c) * scale`` times the
    directions, float64) and its unscaled ``|a - c|^2`` (``c2``): the stored
    float32 vectors and their proven error bounds, in scaled units.

    Per coordinate the projection error is at most
    ``(d + 3) u (1 + delta) |v|`` (GEMM of d terms, rounding of ``v``), so the
    vector's is ``sqrt(m)`` times that, plus ``m delta |v|`` for the
    departure of the directions from orthonormality; ``|v|^2`` is exact for
    integers, else within ``(d + 4) u |v|^2``. ``_residual`` turns these into
    bounds for the residual norms beyond ``m1``, ``mh`` and ``m`` and for the
    stored vectors; a 1e-37 absolute term covers subnormal float32 values.

    Writes ``W1`` (first ``m1`` coordinates + residual norm beyond them),
    ``Z2`` (coordinates ``m1 ..``), ``r``/``E`` (residual norms and bounds
    at ``mh`` and ``m``), ``E1`` (bound of ``W1``), ``a1 = |W1|`` and
    ``nx1 = float32(a1**2)``.
    """
    rows, m = Zt.shape
    u64 = 2.0 ** -53
    kz = math.sqrt(m) * (d + 3) * u64 * 1.01 * (1.0 + delta) + m * delta
    tiny = 1e-37 * math.sqrt(m + 1) * (d + 1)
    for i in range(rows):
        z = Zt[i]
        c2s = c2[i] * scale * scale
        cn = math.sqrt(c2[i]) * scale
        s1 = 0.0
        for t in range(m1):
            s1 += z[t] * z[t]
        sh = s1
        for t in range(m1, mh):
            sh += z[t] * z[t]
        sm = sh
        for t in range(mh, m):
            sm += z[t] * z[t]
        e_z = kz * cn + 4.0 * u64 * math.sqrt(sm)
        c2_err = 4.0 * m * delta * c2s
        if not exact:
            c2_err += (d + 4) * u64 * 1.01 * c2s
        rr, ee = _residual(s1, c2s, e_z, c2_err)
        E1[i] = ee + tiny
        acc = 0.0
        for t in range(m1):
            w = np.float32(z[t])
            W1[i, t] = w
            acc += np.float64(w) * np.float64(w)
        w = np.float32(rr)
        W1[i, m1] = w
        acc += np.float64(w) * np.float64(w)
        a1[i] = math.sqrt(acc)
        nx1[i] = np.float32(acc)
        for t in range(m1, m):
            Z2[i, t - m1] = np.float32(z[t])
        rr, ee = _residual(sh, c2s, e_z, c2_err)
        r[i, 0] = rr
        E[i, 0] = ee + tiny
        rr, ee = _residual(sm, c2s, e_z, c2_err)
        r[i, 1] = rr
        E[i, 1] = ee + tiny


# --------------------------------------------------------------------------
# Stage-1 rows for the AMX bfloat16 product (see neighbors/pruned/search.py)
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _bf16_round(v):
    """``v`` (float64) rounded to bfloat16 (8 significant bits, nearest,
    ties to even; results below 2**-126 flushed to zero, as the tiles read
    them): ``(bits, value)``. The same rounding as ``amx.bf16_bits`` for
    float32 inputs. ``|v|`` must stay below 2**127."""
    if v == 0.0:
        return np.uint16(0), 0.0
    m, ex = math.frexp(abs(v))            # |v| = m 2**ex, 0.5 <= m < 1
    r = np.rint(m * 256.0)                # 128 .. 256, ties to even
    if r == 256.0:
        r = 128.0
        ex += 1
    e_b = ex - 1 + 127                    # value = (r / 128) 2**(ex - 1)
    if e_b <= 0:
        return np.uint16(0), 0.0
    val = math.ldexp(r, ex - 8)
    bits = (e_b << 7) | (np.int64(r) - 128)
    if v < 0.0:
        bits |= 0x8000
        val = -val
    return np.uint16(bits), val


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _norm_and_gap(w, h, mp):
    """``(sum h^2, sum (w - h)^2)`` over the first ``mp`` values, in float64.
    Only bounds use them (a bound on a sum's rounding holds in any order),
    so LLVM may reassociate them into SIMD lanes: ``fastmath`` with those
    two flags only."""
    nrm = 0.0
    dd = 0.0
    for t in range(mp):
        x = np.float64(h[t])
        d = np.float64(w[t]) - x
        nrm += x * x
        dd += d * d
    return nrm, dd


@njit(cache=True, nogil=True, inline="always")
def _stage1_row(w, wb, e1, index_side, row, hb):
    """One stage-1 row (see ``stage1_rows_index``) into ``row`` (uint16,
    K) from the float32 vector ``w`` and its bits ``wb``; returns
    ``(F, |h|)``. The rounding of ``amx.bf16_bits`` on the bits (nearest,
    ties to even, subnormal results flushed); the rounded values ``h`` as
    float32 bits in the scratch ``hb`` (uint32, >= len(w)): a bfloat16 is
    the top half of its float32."""
    mp = w.shape[0]
    K = row.shape[0]
    for t in range(mp):
        u = np.uint32(wb[t])
        b = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        ex = (b >> np.uint32(7)) & np.uint32(0xFF)
        if ex == 0:
            b = np.uint32(0)
        hb[t] = b << np.uint32(16)
        if index_side:
            row[t] = np.uint16(b)
        elif ex == 0:
            row[t] = 0
        else:
            # -2 h: the sign flipped, the exponent one up (|h| < 2**126)
            row[t] = np.uint16((b ^ np.uint32(0x8000)) + np.uint32(0x80))
    nrm, dd = _norm_and_gap(w, hb[:mp].view(np.float32), mp)
    rest = nrm
    for t in range(3):
        b16, h = _bf16_round(rest)
        rest -= h
        row[mp + t + (3 if index_side else 0)] = b16
        row[mp + t + (0 if index_side else 3)] = 0x3F80          # 1.0
    for t in range(mp + 6, K):
        row[t] = 0
    return e1 + math.sqrt(dd) * (1.0 + 1e-12), math.sqrt(nrm)


@njit(cache=True, nogil=True)
def stage1_rows_index(W, Wb, E1, perm, p0, p1, row, Bp, F, a16):
    """Positions ``p0 .. p1`` of the stage-1 operand, written straight into
    the AMX layout ``Bp`` (``(n_pad / 16, K / 2, 16, 2)``, see
    ``amx.pack_b``), position ``p`` holding index row ``perm[p]``: its
    first-stage vector ``W`` rounded to bfloat16 (``h``), three ones, and
    the float64 ``|h|^2`` in three bfloat16 pieces (within
    ``2**-22 |h|^2``). Per row: ``F = E1 + |W - h|`` (the rounded vector's
    distance to the exact one), ``a16 = |h|``. ``Wb``: the bits of ``W``
    (``W.view(np.uint32)``); ``row``: scratch (K,). Going in position
    order, each 16-column group of ``Bp`` is written whole (its cache lines
    once); only the rows ``W[perm[p]]`` are gathered."""
    K = row.shape[0]
    hb = np.empty(K, np.uint32)
    for p in range(p0, min(p1, p0 + _PF)):
        _prefetch_row(W, perm[p])
    for p in range(p0, p1):
        if p + _PF < p1:
            _prefetch_row(W, perm[p + _PF])     # (rows in cluster order: random)
        j = perm[p]
        F[j], a16[j] = _stage1_row(W[j], Wb[j], E1[j], True, row, hb)
        g = p // 16
        c = p - 16 * g
        for t in range(K // 2):
            Bp[g, t, c, 0] = row[2 * t]
            Bp[g, t, c, 1] = row[2 * t + 1]


@njit(cache=True, nogil=True)
def stage1_rows_query(W, Wb, E1, A, F, a16):
    """Query rows of the stage-1 operand (row-major ``A``): ``-2 h``, the
    three norm pieces and three ones; ``F``, ``a16`` as for the index."""
    hb = np.empty(A.shape[1], np.uint32)
    for i in range(W.shape[0]):
        F[i], a16[i] = _stage1_row(W[i], Wb[i], E1[i], False, A[i], hb)


@njit(cache=True, nogil=True)
def combine_digits(C, Cc, w, scale, Z):
    """Projected coordinates from the exact integer products of a uint8
    tile with the int8 digits of the directions (``amx.gemm_u8s8``):
    ``Z[i, j] = scale * sum_t w[t] (C[i, t m + j] - Cc[t m + j])``, ``Cc``
    the centre's products, ``m = Z.shape[1]``. Each term is exact (an
    integer times a power of two); the sum over the ``D`` digits, largest
    first, rounds at most ``D - 1`` times."""
    D = w.shape[0]
    m = Z.shape[1]
    for i in range(Z.shape[0]):
        for j in range(m):
            s = 0.0
            for t in range(D):
                s += w[t] * np.float64(np.int64(C[i, t * m + j]) - Cc[t * m + j])
            Z[i, j] = s * scale


# --------------------------------------------------------------------------
# The int8 first stage (AVX-512 VNNI, ``amx.Int8FilterPlan``): each
# first-stage vector ``w`` (float32: m1 coordinates and the residual norm)
# stands as ``h = s * v`` with integers ``v`` in -127 .. 127 and one float32
# scale per row, ``s = max|w_t| / 127`` (symmetric: the query side is shifted
# by +128 into uint8 for ``vpdpbusd``, which multiplies uint8 by int8)
INT8_LEVELS = 127
# rows whose largest scaled coordinate is below this take it as their
# largest: ``s >= 2**-57``, so ``-2 s_q s_x`` and the keys' terms stay normal
# float32 numbers (the row's whole vector is then within its bound ``F``)
INT8_SCALE_FLOOR = 2.0 ** -50
# the AVX2 kernels' query rows: v + 64 with |v| <= 62, so 2 .. 126
# (``amx.AVX2_A_MAX``)
AVX2_QUERY_SHIFT = 64
AVX2_QUERY_LEVELS = 62


@njit(cache=True, nogil=True)
def _int8_row(w, e1, out, shift, levels):
    """One row of the int8 operand: ``v`` (``|v| <= levels``, plus
    ``shift``) into ``out`` (the K - len(w) padding values: ``shift``), ``s =
    max|w_t| / levels``; returns ``(F, |h|^2, s, h_last, sum v)`` with ``F = e1 + |w - h|`` (padded for the float64
    sum's rounding, 1e-12 relative: far above (K + 2) u64), ``|h|^2 =
    s^2 sum v^2`` (one float64 rounding of an exact product) and ``h_last =
    s v_last``, the rounded residual coordinate (exact)."""
    mp = w.shape[0]
    amax = INT8_SCALE_FLOOR
    for t in range(mp):
        amax = max(amax, abs(np.float64(w[t])))
    s = np.float64(np.float32(amax / levels))
    sum_sq = 0
    total = 0
    dd = 0.0
    v = 0
    for t in range(mp):
        x = np.float64(w[t])
        v = min(levels, max(-levels, np.int64(np.rint(x / s))))
        d = x - s * v           # (s * v is exact: 24 times 8 bits)
        dd += d * d
        sum_sq += v * v
        total += v
        out[t] = v + shift
    for t in range(mp, out.shape[0]):
        out[t] = shift
    return e1 + math.sqrt(dd) * (1.0 + 1e-12), s * s * sum_sq, s, s * v, total


@njit(cache=True, nogil=True)
def stage1_int8_index(W, E1, perm, p0, p1, row, Bp, XN, XS, XC, F, a8, h_last):
    """Positions ``p0 .. p1`` of the int8 stage-1 operand, position ``p``
    holding index row ``perm[p]``: its integers ``v`` written straight into
    the packed layout ``Bp`` (``amx.pack_b_s8``: ``(n_pad / 16, K / 4, 16,
    4)``) and, per position, ``XN = float32(|h|^2)``, ``XS = s`` and ``XC =
    128 sum v`` (what the kernel subtracts for the query's +128 shift).
    Per row ``j``: ``F``, ``a8 = |h|`` and the residual coordinate
    ``h_last``. ``row``: int64 scratch (K,)."""
    for p in range(p0, min(p1, p0 + _PF)):
        _prefetch_row(W, perm[p])
    for p in range(p0, p1):
        if p + _PF < p1:
            _prefetch_row(W, perm[p + _PF])     # (rows in cluster order: random)
        j = perm[p]
        F[j], nrm, s, h_last[j], total = _int8_row(W[j], E1[j], row, np.int64(0),
                                                   np.int64(INT8_LEVELS))
        a8[j] = math.sqrt(nrm)
        XN[p] = nrm
        XS[p] = s
        XC[p] = 128 * total
        g = p // 16
        c = p - 16 * g
        for t in range(row.shape[0] // 4):
            for u in range(4):
                Bp[g, t, c, u] = row[4 * t + u]


@njit(cache=True, nogil=True)
def stage1_int8_query(W, E1, A, QN, QG, F, a8, h_last, avx2):
    """Query rows of the int8 stage-1 operand: ``v + 128`` (uint8) in
    ``A``, ``QN = float32(|h|^2)``, ``QG = -2 s`` (exact); ``F``, ``a8``,
    ``h_last`` as for the index. ``avx2``: for the AVX2 kernels, 7-bit rows
    ``v + 64`` with ``|v| <= AVX2_QUERY_LEVELS`` (at most 126: their int16
    sums cannot saturate)."""
    row = np.empty(A.shape[1], np.int64)
    shift, levels = (AVX2_QUERY_SHIFT, AVX2_QUERY_LEVELS) if avx2 else (128, INT8_LEVELS)
    for i in range(W.shape[0]):
        F[i], nrm, s, h_last[i], _ = _int8_row(W[i], E1[i], row, shift, levels)
        a8[i] = math.sqrt(nrm)
        QN[i] = nrm
        QG[i] = -2.0 * s
        for t in range(A.shape[1]):
            A[i, t] = row[t]


@njit(cache=True, nogil=True)
def int8_keys(S, nb, L, QN, QG, XN, XS, XC, xc_shift, G):
    """The int8 first stage's keys of a dense tile from its exact int32
    sums ``S`` (``amx.gemm_u8s8`` of the shifted query rows and the tile's
    packed index rows): ``G[b, j] = (XN[j] + QN[b]) + float(S[b, j] -
    (XC[j] >> xc_shift)) * (XS[j] * QG[b])`` in float32, the formula and
    roundings of the filter kernel (``tile_ir._avx512_filter_ir``;
    ``xc_shift`` 1 for the AVX2 kernels' queries shifted by 64)."""
    for b in range(nb):
        qn = QN[b]
        qg = QG[b]
        for j in range(L):
            G[b, j] = (XN[j] + qn) + np.float32(S[b, j] - (XC[j] >> xc_shift)) * (XS[j] * qg)
