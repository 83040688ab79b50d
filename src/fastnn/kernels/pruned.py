"""Numba kernels of the pruned exact search (``fastnn.neighbors.pruned``).

Stage 1 (``scan_collect``, ``scan_sparse``, ``window_exact``) keeps per
query the keys under a running limit set by exact distances of the
smallest keys; ``pruned_block`` then runs stages 2 and 3. Every kernel
takes the typed inputs below (``NamedTuple``s of arrays: numba types them
as tuples, one compiled specialisation per dtype); every comparison keeps
a proven margin (``docs/architecture.md``).
"""

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .distances import _prefetch_row, _sqdist_u8, sqdist, sqdist_float, topk_insert


# ExactInputs.row_kind: how the kernels read ``queries`` / ``index_rows``.
# numba compiles a kernel once per argument type, and each of the search's
# three large kernels takes several seconds to compile (docs/coldstart.md);
# float32 and float64 rows therefore reach them as byte views (uint8 arrays
# of ``itemsize * d`` columns, what uint8 rows already are) with their kind,
# and only the exact distance reinterprets a row: one compile serves uint8,
# float32 and float64 data. Other dtypes (int16, or queries of another
# dtype than the index) come as they are, ROWS_TYPED.
ROWS_TYPED = 0
ROWS_FLOAT32_BYTES = 1
ROWS_FLOAT64_BYTES = 2


class ExactInputs(NamedTuple):
    """What an exact distance of the pruned search needs (one per query
    chunk): query ``i`` of the blocks is row ``query_rows[i]`` of
    ``queries``, read as ``row_kind`` says (``ROWS_*``: float rows as byte
    views). With ``u8_dot`` (uint8 data on a VNNI CPU) the distance is
    the dot-product form ``_sqdist_u8`` from ``queries_s8`` (``q - 128``),
    ``query_sqnorms`` and the index rows' ``row_sums`` / ``row_sqnorms``;
    else ``sqdist`` (``int32_sums``: byte data whose sums fit int32). Both
    give the same exact integer. Absent arrays are empty placeholders."""
    queries: object
    index_rows: object
    row_kind: int
    is_int: bool
    int32_sums: bool
    u8_dot: bool
    queries_s8: object
    query_sqnorms: object
    row_sums: object
    row_sqnorms: object
    query_rows: object


@njit(cache=True, nogil=True)
def _exact(ex, i, j):
    """The exact squared distance of query ``i`` to index row ``j``."""
    r = ex.query_rows[i]
    if ex.row_kind == ROWS_FLOAT32_BYTES:
        return sqdist_float(ex.queries[r].view(np.float32), ex.index_rows[j].view(np.float32))
    if ex.row_kind == ROWS_FLOAT64_BYTES:
        return sqdist_float(ex.queries[r].view(np.float64), ex.index_rows[j].view(np.float64))
    if ex.is_int and ex.u8_dot:
        return _sqdist_u8(ex.queries_s8[r], ex.query_sqnorms[r], ex.index_rows[j],
                          ex.row_sums[j], ex.row_sqnorms[j])
    return sqdist(ex.queries[r], ex.index_rows[j], ex.is_int, ex.int32_sums)


# --------------------------------------------------------------------------
# Pruned exact search with projection lower bounds
#   |q - x| >= |w(q) - w(x)|,  w(v) = (P(v - mu), |residual of v - mu|)
# --------------------------------------------------------------------------
_SUB = 64          # points per sub-block (its minimum key skips it whole)
_PF = 6            # stage 2 prefetches the rows of the candidate this far ahead
_PF3 = 2           # stage 3 (exact distances): this far ahead
_PF_SEEDS = 2      # the seeds' exact distances (_insert_exact): this far ahead


@njit(cache=True, nogil=True)
def _lim(thr, scale, add, pad):
    """A bound threshold in scaled key units: ``(scale sqrt(thr) + add)^2``
    (rounded up) ``+ pad``."""
    return _squared_reach(math.sqrt(thr) * scale + add, pad)


@njit(cache=True, nogil=True, inline="always")
def _squared_reach(reach, pad):
    """``reach^2`` rounded up, plus ``pad``: a key limit from a scaled
    distance reach."""
    return reach * reach * (1.0 + 1e-12) + pad


@njit(cache=True, nogil=True, inline="always")
def _sqrt_up(x):
    """An upper bound of ``sqrt(x)`` (x >= 0; the rounded root times
    ``1 + 1e-15``)."""
    return math.sqrt(x) * (1.0 + 1e-15)


@njit(cache=True, nogil=True, inline="always")
def _lb_dist(acc, sl, pad, scale):
    """A proven lower bound of an unscaled distance from ``acc``, a scaled
    squared distance between stored vectors computed within ``sl``, the
    stored vectors lying within ``pad`` (together) of the exact ones:
    ``(sqrt(acc - sl) - pad) / scale``, every rounding directed down by
    relative factors far above float64's. Negative: no information."""
    v = acc - sl
    if v <= 0.0:
        return -1.0
    return ((math.sqrt(v) * (1.0 - 1e-14) - pad * (1.0 + 1e-14)) / scale) * (1.0 - 1e-15)


@njit(cache=True, nogil=True)
def _f32_up(x):
    """The smallest float32 >= ``x`` (float64): ``key <= x`` and
    ``key <= _f32_up(x)`` then differ only for ``key == _f32_up(x) > x``."""
    f = np.float32(x)
    if np.float64(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return f


@njit(cache=True, nogil=True, inline="always")
def _count_le(g, u, L, t):
    """How many keys of sub-block ``u`` of ``g[:L]`` are <= ``t`` (1 for a
    partial sub-block: it is simply scanned). A counting sum vectorises in
    numba (a float minimum does not); the loop is written so that LLVM sees
    non-negative indices (else it emits gathers for numba's negative-index
    wraparound)."""
    if (u + 1) * _SUB > L:
        return 1
    s = 0
    for j in range(u * _SUB, u * _SUB + _SUB):
        s += g[j] <= t
    return s


@njit(cache=True, nogil=True, inline="always")
def _seen(seen, j, b):
    """Whether row ``j`` was measured for query ``b`` of the block."""
    return (seen[j, b >> 6] >> np.uint64(b & 63)) & np.uint64(1) != 0


@njit(cache=True, nogil=True, inline="always")
def _mark(seen, j, b):
    seen[j, b >> 6] |= np.uint64(1) << np.uint64(b & 63)


class KeyBounds(NamedTuple):
    """How stage-1 keys relate to exact distances, per query ``i``: a key
    ``~ |w1(q) - w1(x)|^2`` is computed within ``key_slack[i]`` for
    vectors within ``key_add[i]`` of the exact ones, all times ``scale``
    (the power of two the projected data were multiplied by)."""
    scale: float
    key_add: object
    key_slack: object


class Stage1State(NamedTuple):
    """Per query of a block (row ``b``), what stage 1 keeps between tiles:
    the ``seed_keys.shape[1]`` smallest keys so far and their rows
    (``seed_counts`` filled), the exact top-k of the measured ones
    (``top_dist`` / ``top_rows``, ``top_counts`` filled), the running key
    limit ``key_limits`` those give, how many exact distances were taken
    (``n_measured``), the keys at or below the limit (``cand_keys`` /
    ``cand_rows``; ``n_cand`` counts them, also beyond the capacity), a
    row buffer and a bit per (row, query) set when the row is measured."""
    seed_keys: object
    seed_rows: object
    seed_counts: object
    top_dist: object
    top_rows: object
    top_counts: object
    key_limits: object
    n_measured: object
    cand_keys: object
    cand_rows: object
    n_cand: object
    row_buffer: object
    measured: object


@njit(cache=True, nogil=True)
def _insert_exact(ex, i, js, m, kd, ki, c):
    """Exact distances of query ``i`` to the rows ``js[:m]`` (none measured
    before for this query: the callers keep a bit per row) inserted into
    the top list ``(kd, ki)`` (``c`` filled); returns the new count. The
    next rows are prefetched. (Float rows went four at a time when a float
    distance was one latency-bound chain; ``sqdist_float`` sums in eight
    lanes now, and the four-row form cost compile time: docs/benchmarks.md.)"""
    X = ex.index_rows
    for t in range(min(m, _PF_SEEDS)):
        _prefetch_row(X, js[t])
    for t in range(m):
        if t + _PF_SEEDS < m:
            _prefetch_row(X, js[t + _PF_SEEDS])
        c = topk_insert(kd, ki, c, _exact(ex, i, js[t]), js[t])
    return c


@njit(cache=True, nogil=True, inline="always")
def _measure_seeds(b, i, ex, bounds, st, c):
    """Exact distances of the new first k seeds of row ``b`` (the first
    ``c`` of ``st.seed_rows[b]``; a seed ranked below k now was so when it
    entered, and was measured then): the running key limit. Seeds ranked k
    and beyond are measured at the end. (Measuring only now and then, or
    predicting the threshold from the keys, kept far more keys.)"""
    k = st.top_dist.shape[1]
    sib = st.seed_rows[b]
    js = st.row_buffer
    m = 0
    for t in range(min(c, k)):
        j = sib[t]
        if not _seen(st.measured, j, b):
            js[m] = j
            _mark(st.measured, j, b)
            m += 1
    if m == 0:
        return          # (a call with nothing to insert still costs ~0.2 us)
    st.top_counts[b] = _insert_exact(ex, i, js, np.int64(m), st.top_dist[b], st.top_rows[b],
                                     np.int64(st.top_counts[b]))
    st.n_measured[b] += m
    if st.top_counts[b] == k:
        st.key_limits[b] = _lim(st.top_dist[b, k - 1], bounds.scale, bounds.key_add[i],
                                bounds.key_slack[i])


@njit(cache=True, nogil=True)
def gather_rows(X, rows, out):
    """``out[t, :d] = X[rows[t]]`` (``out`` may be wider: its padding
    columns are left as they are)."""
    d = X.shape[1]
    for t in range(rows.shape[0]):
        x = X[rows[t]]
        o = out[t]
        for c in range(d):
            o[c] = x[c]


@njit(cache=True, nogil=True)
def pack_rows_s8(A, rows, out):
    """``amx.pack_b_s8`` of the rows ``A[rows]`` into ``out``
    (``(n_pad / 16, k / 4, 16, 4)`` int8, zeroed where no row or value
    is)."""
    d = A.shape[1]
    k4 = out.shape[1]
    for g in range(out.shape[0]):
        for c in range(16):
            r = 16 * g + c
            if r < rows.shape[0]:
                a = A[rows[r]]
                for t in range(k4):
                    for u in range(4):
                        v = 4 * t + u
                        out[g, t, c, u] = a[v] if v < d else 0
            else:
                for t in range(k4):
                    for u in range(4):
                        out[g, t, c, u] = 0


@njit(cache=True, nogil=True)
def window_exact(C, rows, q0, nb, ex, bounds, st):
    """The first stage-1 tile of a uint8 block, exactly: ``C[p, b]`` holds
    the integer product ``x . (q - 128)`` of row ``rows[p]`` of the index
    and query ``q0 + b`` (``gemm_u8s8``), so ``|q - x|^2 = |q|^2 + |x|^2 -
    2 (C + 128 sum(x))`` exactly (``ex`` holds the norms and sums). Per
    query: the exact top-k of the tile (ties by row), every row marked
    measured, the key limit from the k-th distance, and the seed list
    closed (seeds ``-inf``: the exact threshold replaces them)."""
    kd, ki, kc = st.top_dist, st.top_rows, st.top_counts
    sd, si, seen = st.seed_keys, st.seed_rows, st.measured
    k = kd.shape[1]
    qn = np.empty(nb, np.int64)
    thr = np.empty(nb, np.float64)        # k-th distance so far (a plain compare
    for b in range(nb):                   # skips nearly every pair)
        qn[b] = ex.query_sqnorms[ex.query_rows[q0 + b]]
        thr[b] = kd[b, k - 1] if kc[b] == k else np.inf
    nw = seen.shape[1]
    for p in range(rows.shape[0]):
        j = rows[p]
        base = ex.row_sqnorms[j] - 256 * ex.row_sums[j]
        c = C[p]
        for b in range(nb):
            d = np.float64(qn[b] + base - 2 * np.int64(c[b]))
            if d <= thr[b]:
                kc[b] = topk_insert(kd[b], ki[b], kc[b], d, j)
                if kc[b] == k:
                    thr[b] = kd[b, k - 1]
        for w in range(nw):
            bits = min(64, nb - 64 * w)
            if bits > 0:
                seen[j, w] |= np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - bits)
    for b in range(nb):
        i = q0 + b
        if kc[b] == k:
            st.key_limits[b] = _lim(kd[b, k - 1], bounds.scale, bounds.key_add[i],
                                    bounds.key_slack[i])
        for t in range(sd.shape[1]):
            sd[b, t] = -np.inf
            si[b, t] = ki[b, min(t, kc[b] - 1)]
        st.seed_counts[b] = sd.shape[1]


@njit(cache=True, nogil=True)
def tile_limits(sd, sc, lim1, nb, T):
    """Per row the float32 filter of the next tile: the larger of the seed
    limit and the running threshold (rounded up; every key the tile's scan
    could use passes it); ``-inf`` for the padding rows ``nb ..``."""
    n_seed = sd.shape[1]
    for b in range(T.shape[0]):
        if b >= nb:
            T[b] = -np.inf
            continue
        slim = sd[b, n_seed - 1] if sc[b] == n_seed else np.inf
        T[b] = _f32_up(max(slim, lim1[b]))


@njit(cache=True, nogil=True)
def scan_sparse(OK, OJ, CNT, L, j0, perm, q0, nb, ex, bounds, st):
    """``scan_collect`` for a tile after the first, from the output of the
    tile filter (``gemm_filter`` with ``tile_limits``): per row only the
    keys at or below the row's limit, in column order (``OK``/``OJ``/
    ``CNT``); columns ``L ..`` are padding."""
    n_seed = st.seed_keys.shape[1]
    cap = st.cand_keys.shape[1]
    cand_k, cand_j = st.cand_keys, st.cand_rows
    for b in range(nb):
        if CNT[b] == 0:
            continue            # (no key: no new seed, no candidate)
        i = q0 + b
        c = st.seed_counts[b]
        sdb = st.seed_keys[b]
        sib = st.seed_rows[b]
        nc = st.n_cand[b]
        lim = st.key_limits[b]
        slim = sdb[n_seed - 1] if c == n_seed else np.inf
        for t in range(CNT[b]):
            j = np.int64(OJ[b, t])
            if j >= L:
                break
            v = np.float64(OK[b, t])
            if v < slim:
                c = topk_insert(sdb, sib, c, v, perm[j0 + j])
                slim = sdb[n_seed - 1] if c == n_seed else np.inf
            if v <= lim:
                # (the append is written out here and in scan_collect: an
                # inlined helper taking the arrays measured 25 % slower at
                # k=10 on CIFAR HOG)
                if nc < cap:
                    cand_k[b, nc] = OK[b, t]
                    cand_j[b, nc] = perm[j0 + j]
                nc += 1
        st.seed_counts[b] = c
        _measure_seeds(b, i, ex, bounds, st, c)
        st.n_cand[b] = nc


@njit(cache=True, nogil=True)
def scan_collect(G, L, j0, perm, q0, ex, bounds, st):
    """Stage 1 on one product tile: keys of the points at positions
    ``j0 .. j0 + L`` of the stage-1 order (``G[:, :L]``; ``G`` may be
    wider; ``perm`` maps a position to its row of the index) for the
    queries ``q0 .. q0 + G.shape[0]`` (``bounds``: how keys relate to
    distances).

    Per query row, over sub-blocks of ``_SUB`` keys that hold a key at or
    below the current thresholds (counted vectorised, the rest skipped):
    the smallest keys so far (the seeds), whose first k get their exact
    distances when they enter (the running top-k), which give a running
    key limit; and the keys at or below it, appended to the candidates
    (``n_cand`` counts them, also beyond the capacity: the caller then
    recomputes that query's keys). Limits only fall, so every key under
    the final limit has been appended. No key matrix is stored.
    """
    nb = G.shape[0]
    nsb = (L + _SUB - 1) // _SUB
    n_seed = st.seed_keys.shape[1]
    cap = st.cand_keys.shape[1]
    cand_k, cand_j = st.cand_keys, st.cand_rows
    for b in range(nb):
        i = q0 + b
        g = G[b]
        c = st.seed_counts[b]
        sdb = st.seed_keys[b]
        sib = st.seed_rows[b]
        nc = st.n_cand[b]
        lim = st.key_limits[b]
        j_first = 0
        while c < n_seed and j_first < L:       # the first seeds, unfiltered
            c = topk_insert(sdb, sib, c, np.float64(g[j_first]), perm[j0 + j_first])
            j_first += 1
        # ---- one filtered pass: seeds below the seed limit, candidates
        # below the threshold of the earlier tiles (none yet: after seeds)
        first = lim == np.inf
        # (a seed list still short here means the tile is used up: every
        # point so far is a seed)
        slim = sdb[n_seed - 1] if c == n_seed else np.inf
        t32 = _f32_up(slim if first else max(slim, lim))
        for u in range(nsb):
            if _count_le(g, u, L, t32) == 0:
                continue
            for j in range(u * _SUB, min(L, (u + 1) * _SUB)):
                v = np.float64(g[j])
                if v < slim and j >= j_first:
                    c = topk_insert(sdb, sib, c, v, perm[j0 + j])
                    slim = sdb[n_seed - 1]
                    # the sub-block filter follows the falling seed limit (kept
                    # at its first value, it let nearly every sub-block of a
                    # cluster's tile through at small k)
                    t32 = _f32_up(slim if first else max(slim, lim))
                if not first and v <= lim:
                    if nc < cap:
                        cand_k[b, nc] = g[j]
                        cand_j[b, nc] = perm[j0 + j]
                    nc += 1
        st.seed_counts[b] = c
        _measure_seeds(b, i, ex, bounds, st, c)
        if first and st.key_limits[b] < np.inf:
            # the tile's candidates under the threshold just set
            lim = st.key_limits[b]
            t32 = _f32_up(lim)
            for u in range(nsb):
                if _count_le(g, u, L, t32) == 0:
                    continue
                for j in range(u * _SUB, min(L, (u + 1) * _SUB)):
                    if np.float64(g[j]) <= lim:
                        if nc < cap:
                            cand_k[b, nc] = g[j]
                            cand_j[b, nc] = perm[j0 + j]
                        nc += 1
        st.n_cand[b] = nc


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sq_l2_part(a, b, start, stop):
    """Squared distance over coordinates [start, stop) of two float32
    vectors, accumulated in float64. Only bounds use it, and the rounding
    bound of a sum holds in any order, so LLVM may reassociate it (SIMD
    lanes) and contract it (FMA): ``fastmath`` with those two flags only."""
    s = 0.0
    for t in range(start, stop):
        d = np.float64(a[t]) - np.float64(b[t])
        s += d * d
    return s


# stage 3 orders its candidates by bound with a counting sort into this many
# buckets between the smallest and largest bound, then an insertion sort
# within them (a few candidates per bucket on CIFAR). A heap sort's
# comparisons are unpredictable branches: it cost a third as much as the
# exact distances it ordered (docs/benchmarks.md, 2026-12-07 night); numba's
# np.argsort costs ~1 s of compile time
STAGE3_BUCKETS = 64


@njit(cache=True, nogil=True)
def _sort_bounds(keys, n, order, counts):
    """``order[:n]`` = the positions of ``keys[:n]`` (finite) in increasing
    key order: a counting sort into ``len(counts) - 1`` equal buckets
    between the smallest and largest key, then an insertion sort (keys move
    only within their bucket). Only the order in which stage 3 measures
    depends on it, never an answer."""
    if n == 0:
        return
    lo = keys[0]
    hi = keys[0]
    for t in range(1, n):
        lo = min(lo, keys[t])
        hi = max(hi, keys[t])
    n_buckets = counts.shape[0] - 1
    per_unit = n_buckets / (hi - lo) if hi > lo else 0.0
    if not per_unit <= 1e300:       # (a subnormal spread)
        per_unit = 0.0
    for b in range(n_buckets + 1):
        counts[b] = 0      # (a loop: numba compiles array expressions slowly)
    for t in range(n):
        counts[min(n_buckets - 1, int((keys[t] - lo) * per_unit)) + 1] += 1
    for b in range(n_buckets):
        counts[b + 1] += counts[b]
    for t in range(n):
        b = min(n_buckets - 1, int((keys[t] - lo) * per_unit))
        order[counts[b]] = t
        counts[b] += 1
    for t in range(1, n):
        u = order[t]
        key = keys[u]
        s = t - 1
        while s >= 0 and keys[order[s]] > key:
            order[s + 1] = order[s]
            s -= 1
        order[s + 1] = u


class Stage2Inputs(NamedTuple):
    """The projected vectors stage 2 reads (see ``pruned_block``)."""
    index_keys: object          # W1: float32 first-stage vectors of the index rows
    first_components: int       # m1
    query_keys: object          # Wq: the queries' float32 first-stage vectors
    query_key_residual: object  # rq1: the residual coordinate of the queries' keys
    query_rounding_error: object  # Fq: the queries' rounded key vectors' distance bound
    row_aux: object             # aux: per row (r at mh, r at m, key residual, F)
    rounded_keys: bool          # keys came from bfloat16 or int8 products
    recompute_keys: bool        # ... and stage 2 recomputes them from W1 (int8)
    query_tail: object          # Zq2: the queries' coordinates m1 ..
    index_tail: object          # Z2: the index rows' coordinates m1 ..
    query_residuals: object     # rq: the queries' residual norms at mh and m
    tail_first_step: int        # h = mh - m1
    f32_key_add: object         # e1_add: float32 key vectors' distance bound
    f32_key_slack: object       # slack1: float32 key rounding margin
    tail_pad: object            # pad2: stored tail vectors' distance bound, per step


class SearchResults(NamedTuple):
    """Where ``pruned_block`` writes (rows indexed by query)."""
    distances: object
    rows: object
    n_exact: object


class Stage3Scratch(NamedTuple):
    """Per-thread work arrays of ``pruned_block`` (``k`` and ``n`` long)."""
    top_dist: object
    top_rows: object
    cand_keys: object
    cand_bounds: object
    cand_rows: object
    order: object
    bucket_counts: object       # STAGE3_BUCKETS + 1


@njit(cache=True, nogil=True)
def pruned_block(ex, q0, nb, bounds, st, stage2, results, scratch):
    """Exact k-NN of the queries ``q0 .. q0 + nb`` after stage 1
    (``scan_collect``/``scan_sparse`` over all tiles, state ``st``): a
    cascade of proven lower bounds.

    Stage 1 gave, per query, the keys under its running limit (the
    candidates), ``key ~ |w1(q) - w1(x)|^2`` within ``bounds.key_slack``
    for vectors within ``bounds.key_add`` of the exact ``w1`` (the first
    ``m1`` projected coordinates plus the residual norm beyond them: the
    float32 ``index_keys``/``query_keys``, or these rounded (to bfloat16, or
    to int8 times a scale per row) when ``rounded_keys``; ``query_key_residual``/``row_aux[:, 2]`` hold the key
    vectors' residual coordinate), its seeds (the first k already measured)
    and the exact top-k so far. A query whose list overflowed gets all its
    keys recomputed from ``index_keys`` in float64 (vectors within
    ``f32_key_add``; ``f32_key_slack``, the float32 key margin, covers far
    more than that sum's rounding). Stage 2 (the points whose key reaches
    the threshold) takes the key minus its residual term and extends it
    with the coordinates ``m1 ..`` (``index_tail``): first ``h`` more
    coordinates and the residual norm ``row_aux[:, 0]`` beyond them, then
    all of them with ``row_aux[:, 1]`` (most points stop after the first
    step); its vectors lie within ``tail_pad`` of the exact ones, plus
    ``key_add`` for bfloat16 keys. Stage 3: exact distances in increasing
    order of the stage-2 bound, until the bound passes the k-th exact
    distance (points measured before, as seeds, are skipped: a bit per row
    and query of the block, set when the row is measured).

    Every comparison carries a proven floating-point margin: a point is
    skipped only when its true distance is strictly above the threshold,
    so the answer is the exact top-k by (distance, index). Stage 1 skips
    ``j`` when ``key > (scale * sqrt(thr) + key_add[i])**2 + key_slack[i]``;
    stage 2 when ``lb2 > (scale * sqrt(thr) + tail_pad[i, s] (+ key_add[i]))**2
    + f32_key_slack[i] (+ key_slack[i])`` (``s`` = 0, 1 for the two steps).
    ``scale`` is the power of two the projected data were multiplied by
    (keeps float32 values near 1: no overflow, no underflow); exact
    distances ``thr`` are unscaled.
    """
    kd, ki, cb_k, cb_d, cb_i, cb_o, counts = scratch
    k = st.top_dist.shape[1]
    for b in range(nb):
        i = q0 + b
        c = st.top_counts[b]
        for t in range(c):
            kd[t] = st.top_dist[b, t]
            ki[t] = st.top_rows[b, t]
        c, measured = _measure_remaining_seeds(ex, b, i, st, kd, ki, c, cb_i)
        measured += st.n_measured[b]
        thr = kd[k - 1]
        nc, over = _stage1_survivors(b, i, thr, bounds, st, stage2, cb_k, cb_i)
        nk = _stage2_bounds(i, thr, nc, over, bounds, stage2, cb_k, cb_i, cb_d)
        c, more = _stage3_exact(ex, b, i, thr, nk, st.measured, kd, ki, c, cb_d, cb_i, cb_o,
                                counts)
        results.n_exact[i] = measured + more
        for t in range(k):
            results.distances[i, t] = kd[t]
            results.rows[i, t] = ki[t]


@njit(cache=True, nogil=True, inline="always")
def _measure_remaining_seeds(ex, b, i, st, kd, ki, c, buf):
    """Exact distances of query ``i``'s seeds ranked k and beyond that were
    not measured yet, into the top list ``(kd, ki)`` (``c`` filled).
    Returns the new count and how many were measured."""
    k = st.top_dist.shape[1]
    m = 0
    for t in range(k, st.seed_counts[b]):
        j = st.seed_rows[b, t]
        if not _seen(st.measured, j, b):
            buf[m] = j
            _mark(st.measured, j, b)
            m += 1
    c = _insert_exact(ex, i, buf, np.int64(m), kd, ki, np.int64(c))
    return c, m


@njit(cache=True, nogil=True, inline="always")
def _stage1_survivors(b, i, thr, bounds, st, stage2, keys_out, rows_out):
    """The points the first bound cannot exclude at the threshold ``thr``,
    with their keys: from the kept list, or, when it overflowed, every key
    recomputed from the float32 vectors in float64. Returns ``(count,
    recomputed)``."""
    nc = 0
    if st.n_cand[b] <= st.cand_keys.shape[1]:
        lim1 = _lim(thr, bounds.scale, bounds.key_add[i], bounds.key_slack[i])
        # int8 keys: stage 1 filtered with the largest point bound F of the
        # index (``key_add`` = Fq + max F: one threshold per query); here
        # each point's own F (``row_aux[:, 3]``) gives its own limit, which
        # stage 2 would otherwise pay for (the median F is a quarter of the
        # largest on CIFAR raw, a third on HOG; stage-1 survivors per query
        # at k=10 756 -> 344 raw, 64 -> 36 HOG). A key under the limit of
        # F = 0 passes without reading F. (Not for bfloat16 keys: their F is
        # ~1/3 as large, and reading it cost AMX more than the 2 survivors
        # of 29 it saved on CIFAR HOG)
        per_point = stage2.recompute_keys
        aux = stage2.row_aux
        reach = math.sqrt(thr) * bounds.scale + stage2.query_rounding_error[i]
        slack = bounds.key_slack[i]
        lim0 = _squared_reach(reach, slack)
        for t in range(st.n_cand[b]):
            key = st.cand_keys[b, t]
            if not key <= lim1:
                continue
            j = st.cand_rows[b, t]
            if per_point and key > lim0 and key > _squared_reach(reach + aux[j, 3], slack):
                continue
            rows_out[nc] = j
            keys_out[nc] = key
            nc += 1
        return nc, False
    # the list overflowed: all keys again, float64 sums from W1
    W1, wq = stage2.index_keys, stage2.query_keys[i]
    m1p = stage2.first_components + 1
    lim1 = _lim(thr, bounds.scale, stage2.f32_key_add[i], stage2.f32_key_slack[i])
    for j in range(W1.shape[0]):
        key = _sq_l2_part(wq, W1[j], np.int64(0), m1p)
        if key <= lim1:
            rows_out[nc] = j
            keys_out[nc] = key
            nc += 1
    return nc, True


@njit(cache=True, nogil=True, inline="always")
def _stage2_bounds(i, thr, nc, over, bounds, stage2, cb_k, cb_i, cb_d):
    """Stage 2 for the ``nc`` survivors (``cb_i``, keys ``cb_k``): the key
    minus its residual term (the first m1 coordinates), plus the
    coordinates m1 .. of the tail and the new residual, in two steps; each
    point's proven lower bound of its distance. The points whose bound does
    not exceed ``sqrt(thr)`` are compacted into ``cb_i`` with their bounds
    in ``cb_d``; returns their count."""
    m1, aux, Z2 = stage2.first_components, stage2.row_aux, stage2.index_tail
    h, m2 = stage2.tail_first_step, stage2.index_tail.shape[1]
    scale, rq, pad2 = bounds.scale, stage2.query_residuals, stage2.tail_pad
    # the keys' vectors: rounded ones from the tile products (within Fq of
    # the query's exact vector, aux[j, 3] of the point's), float32 ones
    # otherwise (their error is in pad2); residual coordinate rq1 / aux[j, 2]
    # (W1's for recomputed keys). int8 keys' rounding (F, ~1 % of |w1|)
    # would loosen stage 2 as much as stage 1: their survivors get the key
    # again from the float32 vectors (m1 + 1 products each, against d for the
    # exact distance it saves)
    recompute = stage2.recompute_keys and not over
    W1 = stage2.index_keys
    wq = stage2.query_keys[i]
    m1p = m1 + 1
    if stage2.rounded_keys and not over and not recompute:
        fq = stage2.query_rounding_error[i]
        f_x = 1.0
        sl = bounds.key_slack[i] + stage2.f32_key_slack[i]
        rqk = stage2.query_key_residual[i]
    else:
        fq = 0.0
        f_x = 0.0
        sl = stage2.f32_key_slack[i]
        rqk = np.float64(stage2.query_keys[i, m1])
    zq = stage2.query_tail[i]
    sqrt_thr = _sqrt_up(thr)
    nk = 0
    for t in range(min(nc, _PF)):
        _prefetch_row(Z2, cb_i[t])
        _prefetch_row(aux, cb_i[t])
        if recompute:
            _prefetch_row(W1, cb_i[t])
    for t in range(nc):
        if t + _PF < nc:
            _prefetch_row(Z2, cb_i[t + _PF])
            _prefetch_row(aux, cb_i[t + _PF])
            if recompute:
                _prefetch_row(W1, cb_i[t + _PF])
        j = cb_i[t]
        zx = Z2[j]
        ax = aux[j]
        key = _sq_l2_part(wq, W1[j], np.int64(0), m1p) if recompute else cb_k[t]
        d1 = rqk - (np.float64(W1[j, m1]) if over or recompute else ax[2])
        f = fq + f_x * ax[3]
        part = (key - d1 * d1) + _sq_l2_part(zq, zx, np.int64(0), h)
        dr = rq[i, 0] - ax[0]
        lb = _lb_dist(part + dr * dr, sl, pad2[i, 0] + f, scale)
        if lb > sqrt_thr:
            continue
        if h < m2:
            part += _sq_l2_part(zq, zx, h, m2)
            dr = rq[i, 1] - ax[1]
            lb = _lb_dist(part + dr * dr, sl, pad2[i, 1] + f, scale)
            if lb > sqrt_thr:
                continue
        cb_d[nk] = lb
        cb_i[nk] = j
        nk += 1
    return nk


@njit(cache=True, nogil=True, inline="always")
def _stage3_exact(ex, b, i, thr, nk, seen, kd, ki, c, cb_d, cb_i, cb_o, counts):
    """Stage 3: exact distances of the ``nk`` points in increasing order of
    their bound ``cb_d``, until the bound passes the k-th exact distance
    (points measured before, as seeds, are skipped). Returns the new count
    of the top list and how many were measured."""
    k = kd.shape[0]
    X = ex.index_rows
    sqrt_thr = _sqrt_up(thr)
    order = cb_o[:nk]
    _sort_bounds(cb_d, np.int64(nk), order, counts)   # (np.int64: no compile for a literal 0)
    measured = 0
    for t in range(min(nk, _PF3)):
        _prefetch_row(X, cb_i[order[t]])
    for t in range(nk):
        u = order[t]
        if cb_d[u] > sqrt_thr:
            break
        if t + _PF3 < nk:
            _prefetch_row(X, cb_i[order[t + _PF3]])
        j = cb_i[u]
        if _seen(seen, j, b):
            continue        # measured as a seed: listed, or beyond the list
        _mark(seen, j, b)
        c = topk_insert(kd, ki, c, _exact(ex, i, j), j)
        measured += 1
        if kd[k - 1] < thr:
            thr = kd[k - 1]
            sqrt_thr = _sqrt_up(thr)
    return c, measured
