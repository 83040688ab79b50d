"""Validation shared by every front end of the neighbours engine (the index,
``pairwise_distances``, the estimators, the Dask index): one check per
input, one error message per mistake, and the small facts about the data
(integer or float, its largest magnitude) that the backends then rely on.
"""

import numbers

import numpy as np

from .._threads import map_threads, run_kernel
from ..kernels import amx as _amx
from ..kernels import distances as _k

METRICS = ("euclidean", "sqeuclidean", "manhattan")
ALIASES = {"l2": "euclidean", "cityblock": "manhattan", "l1": "manhattan"}
BACKENDS = ("auto", "brute", "pruned", "faiss")
KERNELS = ("auto", "amx", "avx512", "avxvnni", "avx2", "portable")

UNIT_ROUNDOFF_F64 = 2.0 ** -53
UNIT_ROUNDOFF_F32 = 2.0 ** -24
# integer data whose squared distances stay below 2**52 are exact in float64
EXACT_INTEGER_LIMIT = 2 ** 52
# squared distances of float64 values beyond this magnitude overflow
FLOAT64_MAGNITUDE_LIMIT = 1e150
# values per block of the validation's magnitude pass (32 MB of float64)
ABSMAX_BLOCK = 1 << 22


def round_up(n, multiple):
    """``n`` rounded up to a multiple of ``multiple`` (tile and SIMD widths)."""
    return -(-n // multiple) * multiple


def abs_max(X, n_threads=1, block=ABSMAX_BLOCK):
    """The largest magnitude of the C-contiguous float array ``X`` (``inf``
    when it holds NaN or infinity; 0.0 when empty): one pass over its bits,
    blocks of ``block`` values spread over ``n_threads``."""
    if X.dtype == np.float32:
        uint, mask, infinity_bits = np.uint32, np.uint32(0x7FFFFFFF), 0x7F800000
    else:
        uint, mask, infinity_bits = (np.uint64, np.uint64(0x7FFFFFFFFFFFFFFF),
                                     0x7FF0000000000000)
    bits = X.reshape(-1).view(uint)
    starts = list(range(0, bits.shape[0], block))
    block_max = np.zeros(max(1, len(starts)), uint)

    def work(part):
        for s0 in part:
            block_max[s0 // block] = _k.abs_max_bits(bits[s0:s0 + block], mask)

    map_threads(work, starts, n_threads)
    largest = block_max.max()
    if int(largest) >= infinity_bits:
        return np.inf
    return float(np.array([largest], uint).view(X.dtype)[0])


def check_data(X, name="X", allow_empty=False, info=None, n_threads=1):
    """Validate a 2-D numeric matrix; keep integers compact, float16 -> float32.

    Returns ``(array, is_int)``: ``is_int`` means exact integer arithmetic
    applies (squared distances below 2**52). For float data the largest
    magnitude goes to ``info["absmax"]`` when a dict is given (the pruned
    index's scale needs it: no second pass).
    """
    if hasattr(X, "toarray"):
        raise TypeError(f"{name}: sparse matrices are not supported; pass a dense array")
    X = np.asarray(X)
    if X.dtype.kind not in "uif":
        raise TypeError(f"{name} must have a numeric (integer or float) dtype, got {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got ndim={X.ndim}")
    if not allow_empty and X.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 samples")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 features")
    if X.dtype.byteorder not in ("=", "|"):
        X = X.astype(X.dtype.newbyteorder("="))
    if X.dtype == np.float16:
        X = X.astype(np.float32)
    elif X.dtype.kind == "f" and X.dtype != np.float32 and X.dtype != np.float64:
        X = X.astype(np.float64)      # (long double: the kernels take float64)
    is_int = X.dtype.kind in "ui"
    X = np.ascontiguousarray(X)
    if is_int:
        limits = np.iinfo(X.dtype)
        span = max(abs(int(limits.min)), int(limits.max)) * 2
        if X.size and X.shape[1] * span * span >= EXACT_INTEGER_LIMIT:
            # (the dtype's range decides for small integer types: no pass)
            lo, hi = int(X.min()), int(X.max())
            span = max(abs(lo), abs(hi)) * 2
            if X.shape[1] * span * span >= EXACT_INTEGER_LIMIT:
                X = X.astype(np.float64)
                is_int = False
    else:
        largest = abs_max(X, n_threads)
        if largest == np.inf:
            raise ValueError(f"{name} contains NaN or infinity")
        if X.dtype == np.float64 and largest > FLOAT64_MAGNITUDE_LIMIT:
            # squared distances would overflow float64 (float32 data cannot)
            raise ValueError(f"{name} has values beyond 1e150 in magnitude: squared "
                             "distances would overflow float64; rescale the data")
        if info is not None:
            info["absmax"] = largest
    return X, is_int


def check_metric(metric):
    """The metric's canonical name ('l2' -> 'euclidean', 'cityblock'/'l1'
    -> 'manhattan')."""
    metric = ALIASES.get(metric, metric) if isinstance(metric, str) else metric
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; expected one of "
                         f"{METRICS + tuple(ALIASES)}")
    return metric


def check_backend(backend, metric):
    """``backend`` checked against ``BACKENDS`` and the metric's backends
    (the Euclidean metrics take every backend, the others 'auto'/'brute')."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if metric == "manhattan" and backend in ("pruned", "faiss"):
        raise ValueError(f"backend={backend!r} serves the Euclidean metrics only; "
                         "metric='manhattan' takes backend='auto' or 'brute'")
    if metric in ("ip", "chebyshev", "minkowski") and backend not in ("auto", "brute"):
        raise ValueError(f"backend={backend!r}: metric={metric!r} is served by "
                         "backend='auto' or 'brute'")
    return backend


def check_minkowski_p(metric, p):
    """Minkowski's ``p`` (a real >= 1, finite); None for the other metrics
    (where a ``p`` is refused, never ignored)."""
    if metric != "minkowski":
        if p is not None:
            raise ValueError(f"p is Minkowski's parameter; metric={metric!r} takes none")
        return None
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"metric='minkowski' needs p, a real number >= 1; got {p!r}")
    if not 1 <= p < np.inf:
        raise ValueError(f"metric='minkowski' needs 1 <= p < inf, got p={p!r} "
                         "(p = inf is metric='chebyshev')")
    return float(p)


def check_k(n_neighbors, n_index):
    """``n_neighbors`` as an int in ``[1, n_index]`` (sklearn's messages)."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral):
        raise TypeError(f"n_neighbors must be an integer, got {n_neighbors!r}")
    if n_neighbors < 1:
        raise ValueError(f"Expected n_neighbors > 0, got {n_neighbors}")
    if n_neighbors > n_index:
        raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = "
                         f"{n_neighbors}, n_samples_fit = {n_index}")
    return int(n_neighbors)


def check_n_components(n_components):
    if n_components is not None and (
            isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral)
            or not 1 <= n_components <= 4096):
        raise ValueError(f"n_components must be an integer in [1, 4096] or None, "
                         f"got {n_components!r}")
    return n_components


def kernel_families(kernels):
    """``(bfloat16 family, int8 family)`` of the tile kernels for the
    ``kernels`` parameter (None: the portable path)."""
    if kernels == "auto":
        bf16 = _amx.kernel_family("bf16")
        if bf16 == "avx512":
            # the AVX-512 VNNI int8 first stage is faster wherever AVX-512
            # BF16 runs: on Intel, whose cores issue two FMAs for each
            # vdpbf16ps, and on AMD Zen 4 since the filters stopped storing
            # by vpcompressd (docs/benchmarks.md, 2026-12-07 night);
            # kernels='avx512' still runs it
            bf16 = None
        return bf16, _amx.kernel_family("u8s8")
    if kernels == "portable":
        return None, None
    if kernels in ("avx2", "avxvnni"):
        # an AVX2 CPU's choice (no tile kernels, no AVX-512 int8 products;
        # the int8 first stage on 256-bit registers: ``pruned.options``)
        if not _amx.available_int8(kernels):
            raise ValueError(f"kernels={kernels!r}: this CPU cannot run the {kernels} kernels "
                             f"(CPU flags, or FASTNN_AVX2=0); kernels='auto' picks what it can run")
        return None, None
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is not one of {KERNELS}")
    if not _amx.available(kernels):
        raise ValueError(f"kernels={kernels!r}: this CPU cannot run the {kernels} kernels "
                         f"(CPU flags, the OS, or FASTNN_AMX=0 / FASTNN_AVX512=0); "
                         f"kernels='auto' picks what it can run")
    return kernels, (kernels if _amx.available_int8(kernels) else None)


def exact_int32_sums(Q, X, is_int):
    """Byte data whose squared distances fit 32-bit integer sums."""
    return bool(is_int and Q.dtype.itemsize == 1 and X.dtype.itemsize == 1
                and X.shape[1] * 255 ** 2 < 2 ** 31)


def row_sqnorms(X, is_int, n_threads):
    """Squared norms of the rows of ``X`` (float64; exact for integers)."""
    out = np.empty(X.shape[0], np.float64)
    run_kernel(_k.centred_sqnorms_parallel, _k.centred_sqnorms_serial, n_threads,
               X, np.zeros(X.shape[1]), is_int, out)
    return out


def gemm_error_scale(n_features, is_int, unit=UNIT_ROUNDOFF_F64):
    """Relative error of a GEMM-formed squared distance ``|q|^2 + |x|^2 -
    2 q.x`` in units of ``|q|^2`` and ``|x|^2`` (0 for exact integers)."""
    if is_int and unit == UNIT_ROUNDOFF_F64:
        return 0.0
    return (4.0 * n_features + 16.0) * unit


# rows per block of u8_row_stats (a thread's share)
U8_STATS_BLOCK_ROWS = 2048


def u8_row_stats(A, n_threads, shifted=False):
    """Per row of the uint8 ``A``: the sum and the sum of squares (int64)
    and, when ``shifted``, the row minus 128 as int8 (else None); row
    blocks spread over ``n_threads``."""
    n = A.shape[0]
    rows = U8_STATS_BLOCK_ROWS
    S, N = np.empty(n, np.int64), np.empty(n, np.int64)
    A8 = np.empty(A.shape if shifted else (0, 0), np.int8)

    def work(starts):
        for s0 in starts:
            _k.u8_row_stats(A[s0:s0 + rows], S[s0:s0 + rows], N[s0:s0 + rows],
                            A8[s0:s0 + rows] if shifted else A8)

    map_threads(work, list(range(0, n, rows)), n_threads)
    return S, N, (A8 if shifted else None)
