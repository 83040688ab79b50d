"""The projection behind the pruned search's lower bounds.

For an index row or query ``v`` the search keeps ``w(v) = (P (v - c),
|residual of v - c|)`` scaled by a power of two, ``P`` orthonormal rows (the
top principal directions of a sample of the index), ``c`` a centre. Then
``|q - x| >= |w(q) - w(x)|`` (Pythagoras: the residual norms' difference
bounds the distance between the residuals), on any prefix of the
coordinates too. Every stored value carries a proven error bound, so each
comparison of the search keeps a margin.

Stages of building it (``fit_spectrum``, ``build_projection``):

1. Sample ``PCA_SAMPLE_ROWS`` rows, centre them on their mean and scale by a
   power of two (directions do not depend on scale).
2. Directions: the covariance's eigenvectors (<= 1,024 features) or a
   randomized SVD; their residual variance outside 32 / 96 directions tells
   'auto' whether the bounds will be tight.
3. Make the rows exactly orthonormal in float64 (two Cholesky-QR passes):
   the bound needs orthonormality, not PCA optimality; ``delta`` bounds
   what is left.
4. uint8 data on int8 tile kernels: the directions become int8 digits
   (``int8_digits``), exactly the projection from then on, so uint8 rows
   project exactly by integer products.
5. Scale: a power of two that brings the largest centred row near norm 1
   (float32 values neither overflow nor underflow).
6. ``project_rows``: each row's coordinates, residual norms and error
   bounds (``ProjectedRows``).
"""

from dataclasses import dataclass, replace

import numpy as np

from ..._threads import map_threads
from ...kernels import amx as _amx
from ...kernels import distances as _k
from ...kernels import projection as _kproj
from ..validation import UNIT_ROUNDOFF_F64, round_up

# rows the directions are fitted on (covariance for <= 1024 features, else
# randomized SVD: CIFAR raw exact distances per query at k=10 88 with 1,024
# rows, 74 with 2,048)
PCA_SAMPLE_ROWS = 2048
# power iterations of the randomized SVD (> COVARIANCE_MAX_FEATURES features)
PCA_POWER_ITERATIONS = 1
# rows of the sample (or of its transpose) per part of its products over the
# threads (``rows_product``)
SPECTRUM_PART_ROWS = 256
COVARIANCE_MAX_FEATURES = 1024
# default directions: 128; 160 for wide data (raw pixels), whose bounds need
# more (CIFAR-10: exact distances per query 49 -> 40 at k=1, 194 -> 169 at
# k=10) and whose rows project cheaply
DEFAULT_COMPONENTS = 128
DEFAULT_COMPONENTS_WIDE = 160
# rows sampled for the quick spectrum estimate (when fewer than 96 directions
# are fitted)
SPECTRUM_ESTIMATE_ROWS = 512
# int8 digits of the directions for exact uint8 projections, and the widest
# padded row the packed int8 operand takes
INT8_DIGITS = 4
INT8_MAX_FEATURES = 8192
# first-stage coordinates of the float32 BLAS stage (see PrunedOptions)
BLAS_FIRST_STAGE_COMPONENTS = 95
# the int8 first stage's rows hold m1 + 1 values in K steps of 64 (one
# vpdpbusd reads 4 of 16 columns): the last full step below m + 1 (CIFAR-10
# HOG and raw: 127). Its rounding is ~10x bfloat16's (per-row scales), so it
# needs more coordinates: HOG k=10 survivors of the final threshold 30.8
# with 127 (float32 keys with 95: 60.8), raw 197 (float32 with 95: 166)
INT8_KEY_STEP = 64
# the kinds of first stage (``PrunedOptions.first_stage`` resolves to one)
FIRST_STAGES = ("bf16", "int8", "float32")
MIN_FIRST_STAGE_COMPONENTS = 25
# float32 / bfloat16 keys of rows beyond this scaled norm could overflow
MAX_SCALED_NORM = 2.0 ** 60
# bytes of float64 rows per projection tile (a thread's GEMM input)
PROJECT_TILE_BYTES = 4 << 20
# rows per projection tile on the int8 tile kernels
INT8_PROJECT_TILE_ROWS = 256


@dataclass
class Spectrum:
    """Principal directions of a sample of the index."""
    mean: np.ndarray            # (d,) float64 sample mean
    directions: np.ndarray      # (m, d) rows, nearly orthonormal
    residual_32: float          # variance share outside the first 32 directions
    residual_96: float          # ... outside the first 96


@dataclass
class Int8Directions:
    """The directions as int8 digits, packed for ``amx.gemm_u8s8``."""
    packed: np.ndarray          # pack_b_s8 of the (digits * m, d) matrix
    weights: np.ndarray         # (digits,) float64: P = sum_t weights[t] D[t]
    centre_products: np.ndarray  # (digits * m,) int64: D[t] . c
    padded_features: int        # d padded to 64
    error_features: int         # the rounding term's effective number of terms


@dataclass
class Projection:
    """The fitted projection (see the module)."""
    centre: np.ndarray          # (d,) float64 (integers for integer data)
    directions_t: np.ndarray    # (d, m) float64, P transposed
    orthonormality_error: float  # delta: |P P^T - I| max plus rounding
    n_components: int           # m
    first_stage_components: int  # m1
    mid_components: int         # mh: stage 2's first step
    scale: float                # the power of two every projected value carries
    int8: object = None         # Int8Directions or None


@dataclass
class ProjectedRows:
    """Projected rows, all multiplied by ``scale`` (see ``project_rows``)."""
    tail: np.ndarray            # Z2 (n, m - m1) float32: coordinates m1 ..
    residuals: np.ndarray       # r (n, 2): residual norms beyond mh and beyond m
    tail_error: np.ndarray      # E (n, 2): error bounds of (Z[:mh], r0) and (Z, r1)
    keys: np.ndarray            # W1 (n, m1 + 1) float32: first m1 coordinates + residual
    key_norms: np.ndarray       # a1 (n,): |W1|
    key_sqnorms32: np.ndarray   # nx1 (n,) float32(a1**2)
    key_error: np.ndarray       # E1 (n,): error bound of W1
    stage1_rows: object = None  # S1: the tile kernels' query rows (stage1='bf16'/'int8')
    stage1_error: object = None  # F: the rounded rows' distance bound
    stage1_norms: object = None  # a16 / a8: their norms
    stage1_residual: object = None  # their residual coordinate (float64)
    stage1_sqnorms: object = None   # int8: QN, float32 |h|^2
    stage1_scales: object = None    # int8: QG, float32 -2 s

    def take(self, order):
        """The rows in the order ``order`` (absent parts stay absent)."""
        return ProjectedRows(*(None if a is None else a[order] for a in (
            self.tail, self.residuals, self.tail_error, self.keys, self.key_norms,
            self.key_sqnorms32, self.key_error, self.stage1_rows, self.stage1_error,
            self.stage1_norms, self.stage1_residual, self.stage1_sqnorms,
            self.stage1_scales)))


def unit_scaled(S):
    """``S`` (a float temporary, scaled in place) times the power of two that
    brings its largest magnitude into [0.5, 1) (exact; directions and
    variance shares do not change)."""
    big = max(abs(float(S.max())), abs(float(S.min()))) if S.size else 0.0
    if big > 0:
        S *= np.ldexp(1.0, -np.frexp(big)[1])
    return S


def orthonormal_basis(Y):
    """An orthonormal basis of the columns of ``Y`` (float32): one
    Cholesky-QR step in float64 (Householder QR where the Cholesky factor
    does not exist)."""
    Y = Y.astype(np.float64)
    try:
        Q = Y @ np.linalg.inv(np.linalg.cholesky(Y.T @ Y)).T
    except np.linalg.LinAlgError:
        Q = np.linalg.qr(Y)[0]
    return Q.astype(np.float32)


def rows_product(A, B, n_threads):
    """``A @ B`` with the rows of ``A`` in parts of ``SPECTRUM_PART_ROWS``
    over ``n_threads`` threads, BLAS on one thread each (``map_threads``:
    a multi-threaded BLAS call leaves OpenBLAS' worker spinning for ~0.1 s
    into whatever runs next). The parts do not depend on the thread
    count."""
    out = np.empty((A.shape[0], B.shape[1]), np.result_type(A, B))

    def work(starts):
        for r0 in starts:
            np.matmul(A[r0:r0 + SPECTRUM_PART_ROWS], B, out=out[r0:r0 + SPECTRUM_PART_ROWS])
    map_threads(work, list(range(0, A.shape[0], SPECTRUM_PART_ROWS)), n_threads)
    return out


def randomized_pca(S, m, n_iter, rs, oversample=10, n_threads=1):
    """The top ``m`` singular values and right singular vectors of ``S``
    (float32, ``n x d``) by a randomized range finder (Halko et al.; as
    sklearn's ``randomized_svd``) with Cholesky-QR steps and the
    eigen-decomposition of the small ``B B^T``, ``B = Q^T S``: numpy's
    LAPACK only (sklearn's goes through scipy, whose thread pool contends
    with numpy's: 0.1 - 0.25 s against 0.04 s for CIFAR raw's 1,024 x 3,072
    sample, the same captured variance). An ill-conditioned ``B`` falls
    back to its SVD. The sample's products run on ``n_threads``
    (``rows_product``)."""
    omega = rs.normal(size=(S.shape[1], m + oversample)).astype(np.float32)
    Q = orthonormal_basis(rows_product(S, omega, n_threads))
    for _ in range(n_iter):
        Q = orthonormal_basis(rows_product(S.T, Q, n_threads))
        Q = orthonormal_basis(rows_product(S, Q, n_threads))
    B = rows_product(S.T, Q, n_threads).T.astype(np.float64)
    w, U = np.linalg.eigh(B @ B.T)
    w, U = w[::-1][:m], U[:, ::-1][:, :m]
    if not w[-1] > 1e-10 * w[0]:
        _, sv, Vt = np.linalg.svd(B, full_matrices=False)
        return sv[:m], Vt[:m]
    sv = np.sqrt(w)
    return sv, (U.T @ B) / sv[:, None]


def orthonormal_rows(V):
    """Rows of ``V`` (nearly orthonormal, e.g. float32 singular vectors)
    made orthonormal in float64 by two Cholesky-QR passes (much cheaper than
    a Householder QR of the tall matrix; the second pass brings the
    departure from orthonormality to ~1e-15). numpy's LAPACK only: scipy's
    is another OpenBLAS with its own threads, which contend with numpy's on
    a small machine (the inverse of the small triangle, then one product:
    3x faster than solve, same orthonormality)."""
    P = np.ascontiguousarray(V, dtype=np.float64)
    for _ in range(2):
        L = np.linalg.cholesky(P @ P.T)
        P = np.linalg.inv(L) @ P
    return np.ascontiguousarray(P)


def int8_digits(P, n_digits=INT8_DIGITS):
    """Directions ``P`` (``m x d``) as ``n_digits`` int8 digit matrices:
    ``P' = sum_t w[t] D[t]`` with ``w[t] = s 128**-t`` (``s`` a power of two,
    ``|D[0]| <= 63``, later digits in [-64, 64]). ``P'`` (exact in float64,
    within ``s 128**(1 - n_digits) / 2`` of ``P`` per entry) becomes the
    projection, so uint8 data project exactly in integer arithmetic.
    Returns ``(P', D, w, phi)``, ``phi >= max_j sum_t w[t] |D[t, j]|``."""
    amax = float(np.abs(P).max())
    s = float(2.0 ** np.ceil(np.log2(amax / 63.0))) if amax > 0 else 1.0
    R = P / s
    digits = np.empty((n_digits,) + P.shape, np.int8)
    for t in range(n_digits):
        Dt = np.rint(R)
        digits[t] = Dt
        R = (R - Dt) * 128.0
    w = s * 128.0 ** -np.arange(n_digits, dtype=np.float64)
    Pq = np.zeros(P.shape, np.float64)
    for t in range(n_digits):
        Pq += w[t] * digits[t]
    norms = np.sqrt(np.einsum("tjd,tjd->tj", digits.astype(np.float64),
                              digits.astype(np.float64)))
    phi = float((w[:, None] * norms).sum(axis=0).max()) * (1.0 + 1e-12)
    return Pq, digits, w, phi


def int8_directions(P, centre):
    """The directions ``P`` (``m x d``) as ``int8_digits`` about the
    integer ``centre``: ``(P', Int8Directions)``, ``P'`` the digits' exact
    value (the projection uint8 rows then get from ``project_int8_tile``)."""
    m, d = P.shape
    Pq, digits, w, phi = int8_digits(P)
    n_digits = digits.shape[0]
    padded = round_up(d, 64)
    return Pq, Int8Directions(
        packed=_amx.pack_b_s8(digits.reshape(n_digits * m, d), padded), weights=w,
        centre_products=np.einsum("tjd,d->tj", digits.astype(np.int64),
                                  np.asarray(centre).astype(np.int64)).reshape(-1),
        padded_features=padded, error_features=max(1, int(np.ceil((n_digits - 1) * phi))))


def int8_reads_in_place(A, int8):
    """Whether ``project_int8_tile`` may read the rows of ``A`` in place
    (C order, ``int8.padded_features`` wide, starting on a cache line)."""
    return (A.flags.c_contiguous and A.shape[1] == int8.padded_features
            and A.ctypes.data % _amx.LINE == 0)


def project_int8_tile(A, s, e, int8, family, in_place, Ab, Ci, scale, Z):
    """``Z[:e - s] = scale * P'(A[s:e] - c)`` for uint8 rows: the exact
    integer products with the digits of ``int8`` (``int8_directions``) on
    the ``family`` kernels, combined by ``combine_digits``. Rows are padded
    to 32 and features to 64 in the scratch ``Ab`` where needed (padding
    meets zero digits or is dropped); ``Ci`` (int32) holds the products;
    ``in_place``: ``int8_reads_in_place(A, int8)``."""
    ep = s + round_up(e - s, 32)
    if in_place and ep == e:
        At = A[s:e]
    else:
        Ab[:e - s, :A.shape[1]] = A[s:e]
        At = Ab[:ep - s]
    _amx.gemm_u8s8(At, int8.packed, Ci[:ep - s], Ci.shape[1], family=family)
    _kproj.combine_digits(Ci[:e - s], int8.centre_products, int8.weights, scale, Z[:e - s])


def fit_spectrum(X, n_components, random_state, n_threads=1):
    """Stages 1-2: principal directions of a sample of ``X`` (the randomized
    SVD's products on ``n_threads``)."""
    n, d = X.shape
    m = int(n_components or (DEFAULT_COMPONENTS_WIDE if d > COVARIANCE_MAX_FEATURES
                             else DEFAULT_COMPONENTS))
    m = max(1, min(m, d, max(1, n - 1)))
    rs = np.random.RandomState(random_state)
    n_sample = min(n, PCA_SAMPLE_ROWS)
    rows = np.arange(n) if n_sample == n else np.sort(rs.choice(n, n_sample, replace=False))
    sample = X[rows]
    mu = sample.mean(axis=0, dtype=np.float64)
    # directions do not depend on scale: a power of two keeps the float32
    # sample and its products finite for any magnitude of data (uint8 pixels
    # are centred in float32 directly: within +-255, a quarter of the time)
    if sample.dtype == np.uint8:
        S = sample.astype(np.float32)
        S -= mu.astype(np.float32)
        S = unit_scaled(S)
    else:
        S = unit_scaled(sample - mu).astype(np.float32)
    if d <= COVARIANCE_MAX_FEATURES:
        # few features: the covariance's eigenvectors (one small GEMM and
        # a d x d eigh) are cheaper and exact
        S64 = S.astype(np.float64)
        w, V = np.linalg.eigh(S64.T @ S64)
        sv = np.sqrt(np.maximum(w[::-1][:m], 0.0))
        Vt = np.ascontiguousarray(V[:, ::-1][:, :m].T)
    elif m < min(S.shape) - 1:
        sv, Vt = randomized_pca(S, m, PCA_POWER_ITERATIONS, rs, n_threads=n_threads)
    else:
        _, sv, Vt = np.linalg.svd(S.astype(np.float64), full_matrices=False)
        sv, Vt = sv[:m], Vt[:m]
    total = float(np.einsum("ij,ij->", S, S, dtype=np.float64))
    resid = [max(0.0, 1.0 - float(np.sum(sv[:c].astype(np.float64) ** 2)) / total)
             if total > 0 else 0.0 for c in (32, 96)]
    return Spectrum(mean=mu, directions=Vt, residual_32=resid[0], residual_96=resid[1])


def estimate_residuals(X, random_state):
    """Variance shares outside 32 and 96 directions, from the Gram matrix
    of ``SPECTRUM_ESTIMATE_ROWS`` sampled rows (when no spectrum of 96
    directions is fitted)."""
    n = X.shape[0]
    rs = np.random.RandomState(random_state)
    rows = np.sort(rs.choice(n, min(n, SPECTRUM_ESTIMATE_ROWS), replace=False))
    S = X[rows].astype(np.float64)
    S = unit_scaled(S - S.mean(axis=0))
    ev = np.linalg.eigvalsh(S @ S.T)[::-1]
    total = float(ev.sum())
    return tuple(max(0.0, 1.0 - float(ev[:c].sum()) / total) if total > 0 else 0.0
                 for c in (32, 96))


def build_projection(X, is_int, absmax, spectrum, options, first_stage, int8_kernels):
    """Stages 3-5: the exact projection of the index ``X`` (see the module).
    ``first_stage``: one of ``FIRST_STAGES`` (bfloat16 tiles, int8 products
    or the float32 GEMM: it sets the default first-stage width);
    ``int8_kernels``: uint8 rows project by int8 tile products."""
    # exact orthonormality in float64 (the bound needs it, not PCA optimality)
    P = orthonormal_rows(spectrum.directions)                  # (m, d)
    m, d = P.shape
    # the centre: the sample mean, rounded to integers for integer data
    # (then x - c and |x - c|^2 are exact)
    c = np.rint(spectrum.mean) if is_int else spectrum.mean
    int8 = None
    padded = round_up(d, 64)
    if X.dtype == np.uint8 and padded <= INT8_MAX_FEATURES and int8_kernels:
        P, int8 = int8_directions(P, c)
    # (+ the float64 rounding of that product)
    delta = float(np.abs(P @ P.T - np.eye(m)).max()) + (d + 2) * UNIT_ROUNDOFF_F64
    # first-stage coordinates: on tiles the bfloat16 rows hold m1 + 7 values
    # in K steps of 32: the last full step below m + 7 (CIFAR-10: HOG 121 of
    # 128, raw 153 of 160; keys kept per query at k = 10: HOG 311 with 95,
    # 68 with 121; raw 454 / 306 / 222 with 95 / 121 / 153)
    m1 = options.first_stage_components
    if m1 is None:
        m1 = {"bf16": max(MIN_FIRST_STAGE_COMPONENTS, m // 32 * 32 - 7),
              "int8": max(INT8_KEY_STEP, (m + 1) // INT8_KEY_STEP * INT8_KEY_STEP) - 1,
              "float32": BLAS_FIRST_STAGE_COMPONENTS}[first_stage]
    m1 = min(m1, m)
    # |x - c| <= |x| + |c| <= sqrt(d) max|x_t| + |c|
    if X.dtype == np.uint8:
        amax = 255.0        # (a bound suffices: no pass over the index)
    elif absmax is not None:
        amax = absmax       # (float data: from the validation's pass)
    else:
        amax = max(abs(float(X.max())), abs(float(X.min()))) if X.size else 0.0
    big = float(np.sqrt(d) * amax + np.sqrt(c @ c))
    scale = float(np.ldexp(1.0, -np.frexp(big)[1])) if big > 0 else 1.0
    return Projection(centre=c, directions_t=np.ascontiguousarray(P.T),
                      orthonormality_error=delta, n_components=m, first_stage_components=m1,
                      mid_components=min(m, m1 + options.mid_step), scale=scale, int8=int8)


def key_residual(keys, bf16):
    """The residual coordinate of stage-1 key vectors (float64): the float32
    one, or its bfloat16 rounding for keys of the bfloat16 tile kernels."""
    w = keys[:, -1]
    if bf16:
        return _amx.from_bf16(_amx.bf16_bits(w)).astype(np.float64)
    return w.astype(np.float64)


def project_rows(A, is_int, projection, n_threads, int8_family=None, stage1=None,
                 u8_stats=False, avx2_queries=False):
    """Stage 6: project the rows of ``A`` with proven error bounds.

    ``v = (a - c) * scale`` (exact for integers: ``c`` is then integer and
    ``scale`` a power of two) times the directions, one float64 GEMM per
    row tile, tiles spread over threads (uint8 rows with ``int8_family``:
    exact integer products of the int8 digits on tile kernels). Per
    coordinate the error is at most ``(d + 3) u (1 + delta) |v|`` (GEMM of d
    terms, rounding of ``v``; Cauchy-Schwarz with ``|P_t| <= 1 + delta``).

    ``stage1='bf16'`` also writes the queries' rows of the bfloat16
    stage-1 product (``stage1_rows``, see ``stage1_rows_query``), their
    bounds, norms and residual coordinates; ``stage1='int8'`` those of the
    int8 product (``stage1_int8_query``: also ``stage1_sqnorms`` and
    ``stage1_scales``; ``avx2_queries``: the AVX2 kernels' 7-bit rows). ``u8_stats``: also each uint8 row's sum and sum of
    squares (one pass; the exact uint8 distances use them).

    Returns ``(ProjectedRows, stats)`` (``stats`` None unless asked for
    and available), or ``(None, None)`` when the rows are too large for
    the index's float32 scale.
    """
    PT, m1, sc = projection.directions_t, projection.first_stage_components, projection.scale
    d, m = PT.shape
    n = A.shape[0]
    exact = bool(is_int and A.dtype.kind in "ui")
    mh, delta = projection.mid_components, projection.orthonormality_error
    c = projection.centre
    c2 = np.empty(n, np.float64)
    W1 = np.empty((n, m1 + 1), np.float32)
    W1b = W1.view(np.uint32)
    Z2 = np.empty((n, m - m1), np.float32)
    r = np.empty((n, 2), np.float64)
    E = np.empty((n, 2), np.float64)
    E1 = np.empty(n, np.float64)
    a1 = np.empty(n, np.float64)
    nx1 = np.empty(n, np.float32)
    rows = max(16, min(n, PROJECT_TILE_BYTES // (8 * d)))
    int8 = projection.int8 if (A.dtype == np.uint8 and exact and int8_family) else None
    stats = None
    if int8 is not None:
        rows = INT8_PROJECT_TILE_ROWS
        # (rows read in place where they start on cache lines)
        direct = int8_reads_in_place(A, int8)
        if u8_stats and d * 255 * 255 < 2 ** 31:
            stats = (np.empty(n, np.int64), np.empty(n, np.int64))
    if stage1 == "bf16":
        K16 = round_up(m1 + 7, _amx.KB)
        S1 = _amx.aligned((round_up(n, 32), K16), np.uint16, zero=True)
    elif stage1 == "int8":
        # (padding rows: zero sums and scales, so their keys are finite)
        S1 = _amx.aligned((round_up(n, 32), round_up(m1 + 1, INT8_KEY_STEP)), np.uint8,
                          zero=True)
        QN = np.zeros(S1.shape[0], np.float32)
        QG = np.zeros(S1.shape[0], np.float32)
        h_last = np.empty(n, np.float64)
    elif stage1 is not None:
        raise ValueError(f"stage1 must be None, 'bf16' or 'int8', got {stage1!r}")
    if stage1 is not None:
        F = np.empty(n, np.float64)
        a16 = np.empty(n, np.float64)

    def work(starts):
        Zt = np.empty((rows, m), np.float64)
        if int8 is None:
            buf = np.empty((rows, d), np.float64)
        else:
            Ci = _amx.aligned((rows, int8.packed.shape[0] * 16), np.int32)
            Ab = _amx.aligned((rows, int8.padded_features), np.uint8)
        for s in starts:
            e = min(n, s + rows)
            if stats is not None:
                # (with the row sums and squares the uint8 exact distances
                # use: one pass over the index, int32 lanes)
                _k.u8_centred_stats(A[s:e], c, c2[s:e], stats[0][s:e], stats[1][s:e])
            else:
                _k.centred_sqnorms_bound(A[s:e], c, exact, c2[s:e])
            if int8 is None:
                _k.centre_scale_serial(A[s:e], c, sc, buf[:e - s])
                np.matmul(buf[:e - s], PT, out=Zt[:e - s])
                d_err = d
            else:
                # exact integer products on tiles
                project_int8_tile(A, s, e, int8, int8_family, direct, Ab, Ci, sc, Zt)
                d_err = int8.error_features
            _kproj.finish_projection(Zt[:e - s], c2[s:e], sc, exact, d_err, delta, m1, mh,
                                 W1[s:e], Z2[s:e], r[s:e], E[s:e], E1[s:e], a1[s:e], nx1[s:e])
            if stage1 == "bf16":
                _kproj.stage1_rows_query(W1[s:e], W1b[s:e], E1[s:e], S1[s:e], F[s:e], a16[s:e])
            elif stage1 == "int8":
                _kproj.stage1_int8_query(W1[s:e], E1[s:e], S1[s:e], QN[s:e], QG[s:e], F[s:e],
                                         a16[s:e], h_last[s:e], avx2_queries)

    map_threads(work, list(range(0, n, rows)), n_threads)
    if n and not np.sqrt(c2.max()) * sc <= MAX_SCALED_NORM:
        # rows far larger than the index (whose scaled norms are <= 1):
        # their squared norms could overflow float32 / bfloat16 keys
        return None, None
    out = ProjectedRows(tail=Z2, residuals=r, tail_error=E, keys=W1, key_norms=a1,
                        key_sqnorms32=nx1, key_error=E1)
    if stage1 == "bf16":
        out = replace(out, stage1_rows=S1, stage1_error=F, stage1_norms=a16,
                      stage1_residual=key_residual(W1, True))
    elif stage1 == "int8":
        out = replace(out, stage1_rows=S1, stage1_error=F, stage1_norms=a16,
                      stage1_residual=h_last, stage1_sqnorms=QN, stage1_scales=QG)
    return out, stats
