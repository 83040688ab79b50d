"""The pruned exact search, one query chunk at a time.

Stages (each skips a point only when a proven lower bound of its distance
lies strictly above the current k-th exact distance; ``docs/architecture.md``
derives every margin):

1. **Keys.** Per block of queries and per product tile of the index (the
   block's own cluster first, then outwards), keys ``~ |w1(q) - w1(x)|^2``
   on the first ``m1`` projected coordinates plus the residual norm: a
   float32 GEMM on the portable path, bfloat16 tile products on tile
   kernels or int8 products on AVX-512 VNNI / AVX2 (both filtered in L1 by
   each query's limit after the first tile). The
   smallest keys are measured exactly as they come (seeds), which sets a
   running limit; the keys under it are kept (``kernels.distances.
   scan_collect`` / ``scan_sparse``). uint8 blocks on AMX int8 measure the
   first tile exactly instead (``window_exact``).
2. **Tail bound.** For the kept keys, the key minus its residual term plus
   the next coordinates and the new residual norm, in two steps
   (``pruned_block``).
3. **Exact.** Exact distances in increasing bound order until the bound
   passes the k-th distance.
"""

import numpy as np

from ..._threads import map_threads
from ...kernels import amx as _amx
from ...kernels import distances as _k
from ...kernels import projection as _kproj
from ...kernels import pruned as _kp
from ..validation import UNIT_ROUNDOFF_F32, exact_int32_sums, round_up, u8_row_stats
from .clustering import block_tiles, query_blocks
from .projection import key_residual, project_rows

# int8 keys (``amx.Int8FilterPlan``, ``kernels.projection.int8_keys``): four
# float32 roundings, each within u32 (|h_q| + |h_x|)^2, with 1 % to spare
INT8_KEY_ROUNDINGS = 4 * 1.01
# (|h|^2 stored as float32 and -2 s_q s_x are normal numbers: scales are at
# least 2**-57; a 1e-30 term covers the flushing of any subnormal product)
INT8_FLUSH_ERROR = 1e-30

# bfloat16 keys: the norm pieces carry 2**-22 relative error; each flushed
# product term at most 2**-126 (1e-30 covers them)
BF16_NORM_PIECES_ERROR = 2.0 ** -22
BF16_FLUSH_ERROR = 1e-30
# float32 accumulation of K exact bfloat16 products: (K + 3) u32, with 1 %
# to spare
BF16_ACCUMULATION_SPARE = 1.01


def bf16_key_slack(query_norms, width, index_norm_max):
    """How far a stage-1 tile key (``stage1_rows_index`` times
    ``stage1_rows_query``: ``|h_q|^2 + |h_x|^2 - 2 h_q.h_x`` of bfloat16
    vectors, ``width`` = K) may lie from ``|h_q - h_x|^2``: float32
    accumulation of K exact products, the norms' three bfloat16 pieces,
    flushed terms; per query of norm ``|h_q|``, against rows of norm at
    most ``index_norm_max``."""
    return ((width + 3) * UNIT_ROUNDOFF_F32 * BF16_ACCUMULATION_SPARE
            * (query_norms + index_norm_max) ** 2
            + BF16_NORM_PIECES_ERROR * (query_norms ** 2 + index_norm_max ** 2)
            + BF16_FLUSH_ERROR)


def int8_key_slack(query_norms, index_norm_max):
    """How far an int8 stage-1 key (``(|h_x|^2 + |h_q|^2) - 2 s_q s_x
    v_q.v_x``, the integer product exact) may lie from ``|h_q - h_x|^2``:
    the float32 roundings of the stored squared norms, their sum, ``-2 s_q
    s_x`` and its product with the (exactly converted, below 2**24) integer
    sum, and of the last addition; each is within ``u32`` of a term no
    larger than ``(|h_q| + |h_x|)^2``."""
    return (INT8_KEY_ROUNDINGS * UNIT_ROUNDOFF_F32 * (query_norms + index_norm_max) ** 2
            + INT8_FLUSH_ERROR)


class QueryChunk:
    """One chunk of queries, projected, with the margins of its keys."""

    def __init__(self, rows, projection, layout, kind):
        m1 = projection.first_stage_components
        m1p = m1 + 1
        self.rows = rows
        aq = rows.key_norms
        # float32 keys |W1(q) - W1(x)|^2: error within (2 m1p + 24) u32
        # (|w1(q)| + |w1(x)|)^2 (a GEMM of m1 + 3 terms, rounding of the
        # stored norms); the float64 recomputations of stage 2 and of an
        # overflowed list are far inside that margin
        self.f32_slack = (2 * m1p + 24) * UNIT_ROUNDOFF_F32 * (aq + layout.key_norm_max) ** 2
        self.f32_add = rows.key_error + layout.key_error_max
        self.tail_pad = rows.tail_error + layout.tail_error_max
        if kind == "float32":
            self.key_residual = key_residual(rows.keys, False)
        else:
            self.key_residual = rows.stage1_residual
        if kind == "int8":
            # int8 keys |h(q) - h(x)|^2 of h = s * integers: float32
            # roundings of the norms, scales and sums; the rounded vectors
            # lie within F of the exact ones
            self.key_add = rows.stage1_error + layout.stage1_error_max
            self.key_slack = int8_key_slack(rows.stage1_norms, layout.stage1_norm_max)
            self.rounding_error = rows.stage1_error
            self.gemm_rows = None
        elif kind == "bf16":
            # bfloat16 keys |h(q) - h(x)|^2: float32 accumulation of K exact
            # products, the norm pieces, flushed terms; the rounded vectors
            # lie within F of the exact ones
            aq16 = rows.stage1_norms
            self.key_add = rows.stage1_error + layout.stage1_error_max
            self.key_slack = bf16_key_slack(aq16, layout.stage1_width, layout.stage1_norm_max)
            self.rounding_error = rows.stage1_error
            self.gemm_rows = None
        else:
            self.key_add, self.key_slack = self.f32_add, self.f32_slack
            self.rounding_error = np.zeros(rows.keys.shape[0])
            # -2 w1(q), ones and |w1(q)|^2: times the index operand, the key
            Wa = np.empty((rows.keys.shape[0], m1 + 3), np.float32)
            np.multiply(rows.keys, np.float32(-2.0), out=Wa[:, :m1p])
            Wa[:, m1p] = 1.0
            Wa[:, m1p + 1] = aq * aq
            self.gemm_rows = Wa

    def stage2_inputs(self, projection, layout):
        return _kp.Stage2Inputs(
            index_keys=layout.keys, first_components=projection.first_stage_components,
            query_keys=self.rows.keys, query_key_residual=self.key_residual,
            query_rounding_error=self.rounding_error, row_aux=layout.aux,
            rounded_keys=layout.stage1_tiles is not None,
            recompute_keys=layout.stage1_kind == "int8", query_tail=self.rows.tail,
            index_tail=layout.tail, query_residuals=self.rows.residuals,
            tail_first_step=projection.mid_components - projection.first_stage_components,
            f32_key_add=self.f32_add, f32_key_slack=self.f32_slack, tail_pad=self.tail_pad)


class Plan:
    """The sizes of one search (see ``PrunedOptions``)."""

    def __init__(self, index, request, layout, projection, options, int8_family=None):
        n = index.n_samples
        k = request.k
        nq = request.queries.shape[0]
        tiles = layout.stage1_tiles is not None
        self.k = k
        # rounded keys from tile kernels (bfloat16 or int8), filtered in L1
        # after the first tile
        self.tiles = tiles
        self.kind = layout.stage1_kind
        self.int8_family = int8_family      # the int8 first stage's kernels
        self.first_tile = options.first_tile_width(n)
        # later tiles: wider on tile kernels (filtered in L1: width costs no
        # memory traffic, and fewer calls cost less dispatch)
        self.later_tile = (min(round_up(n, 32), options.stage1_tile_filtered) if tiles
                           else self.first_tile)
        # uint8 data on a VNNI CPU: exact distances as |q|^2 + |x|^2 - 2 q.x
        # with 64 byte products per instruction (row sums and squares kept)
        self.u8_dot = bool(_k.VNNI and index.built.int8_family is not None
                           and index.X.dtype == np.uint8
                           and request.queries.dtype == np.uint8)
        # a clustered uint8 index with AMX int8: the first tile (the block's
        # cluster) measured exactly by one integer product, its k-th
        # distance the threshold from the start (no seeds). With AMX, and
        # with the int8 first stage, whose looser keys leave more seeds to
        # measure (CIFAR raw k=10 on an Intel Xeon with FASTNN_AMX=0: exact
        # distances per query 116 -> 68, 2.11 / 1.81 s -> 1.80 / 1.67 s;
        # k=1 even). Not with AVX-512 bfloat16 keys: that product costs more
        # than the seeds it replaces (raw k=1 1.36 -> 1.19 s without it on
        # an AMD EPYC)
        self.exact_first_tile = bool(self.u8_dot and layout.clustered
                                     and projection.int8 is not None
                                     and k <= self.first_tile // 4
                                     and (index.built.int8_family == "amx"
                                          or layout.stage1_kind == "int8"))
        # seeds beyond k help an unclustered index's first tile (random
        # points); a cluster's own tile needs none (CIFAR HOG k=5: 14.8 ->
        # 11.9 exact distances per query)
        self.n_seed = k if layout.clustered else min(n, k + min(options.extra_seeds, 2 * k))
        block = max(1, min(options.query_block,
                           options.block_memory // (32 * (k + self.n_seed))))
        if tiles:
            block = round_up(min(block, request.chunk_size or nq, nq), 32)
        self.block = block
        self.key_capacity = min(n, options.key_capacity)


def _block_state(plan, n):
    qb, k = plan.block, plan.k
    return _kp.Stage1State(
        seed_keys=np.empty((qb, plan.n_seed), np.float64),
        seed_rows=np.empty((qb, plan.n_seed), np.int64), seed_counts=np.empty(qb, np.int64),
        top_dist=np.empty((qb, k), np.float64), top_rows=np.empty((qb, k), np.int64),
        top_counts=np.empty(qb, np.int64), key_limits=np.empty(qb, np.float64),
        n_measured=np.empty(qb, np.int64),
        cand_keys=np.empty((qb, plan.key_capacity), np.float32),
        cand_rows=np.empty((qb, plan.key_capacity), np.int64), n_cand=np.empty(qb, np.int64),
        row_buffer=np.empty(k, np.int64),
        # a bit per row and query of the block: measured exactly (nothing
        # is measured twice)
        measured=np.empty((n, (qb + 63) // 64), np.uint64))


def _reset(st):
    for a in (st.seed_counts, st.top_counts, st.n_measured, st.n_cand, st.measured):
        a[:] = 0
    st.key_limits[:] = np.inf


# float rows the kernels read as byte views (one compile for uint8, float32
# and float64 data: pruned.ROWS_TYPED's comment)
_BYTE_VIEW_KINDS = {np.dtype(np.float32): _kp.ROWS_FLOAT32_BYTES,
                    np.dtype(np.float64): _kp.ROWS_FLOAT64_BYTES}


def exact_row_views(Q, X):
    """``(row_kind, queries, index_rows)`` for ``ExactInputs``: float32 or
    float64 queries and index of one dtype as C-contiguous byte views,
    anything else (uint8 rows are bytes already) as it is."""
    kind = _BYTE_VIEW_KINDS.get(X.dtype) if Q.dtype == X.dtype else None
    if kind is None:
        return _kp.ROWS_TYPED, Q, X
    return kind, np.ascontiguousarray(Q).view(np.uint8), np.ascontiguousarray(X).view(np.uint8)


def search(index, request, dist, ind, projection, layout, options, fallback,
           int8_filter_family=None):
    """Fill ``dist`` / ``ind`` with the exact squared distances and rows;
    ``fallback(request, dist, ind)`` serves queries too large for the
    index's float32 scale; ``int8_filter_family``: the kernels of an int8
    first stage (``'avx512'``, ``'avx2'``). Sets ``index.stats_``."""
    if layout.stage1_kind == "int8" and int8_filter_family is None:
        raise RuntimeError("an int8 stage-1 layout needs the int8 kernels' family")
    Q, is_int, k, n_threads = request.queries, request.is_int, request.k, request.n_threads
    X = index.X
    n = index.n_samples
    plan = Plan(index, request, layout, projection, options, int8_filter_family)
    int8_family = index.built.int8_family
    empty_i64 = np.zeros(1, np.int64)
    XS, XN = index.u8_row_stats(n_threads) if plan.u8_dot else (empty_i64, empty_i64)
    nq_all = Q.shape[0]
    n_exact = np.empty(nq_all, np.int64)
    n_seed_exact = np.zeros(nq_all, np.int64)
    n_kept = np.zeros(nq_all, np.int64)
    qchunk = request.chunk_size or nq_all
    for s in range(0, nq_all, qchunk):
        e = min(nq_all, s + qchunk)
        Qc = Q[s:e]
        rows, _ = project_rows(Qc, index.is_int, projection, n_threads,
                               int8_family=int8_family,
                               stage1=plan.kind if plan.tiles else None,
                               avx2_queries=int8_filter_family == "avx2")
        if rows is None:
            # queries far larger than the index: float32 keys could overflow
            fallback(request._replace(queries=Qc, chunk_size=None), dist[s:e], ind[s:e])
            n_exact[s:e] = n
            continue
        nq = e - s
        blocks, qperm = query_blocks(rows.keys, layout, nq, plan.block, plan.first_tile)
        if qperm is not None:
            # queries grouped by cluster (results go back at the end)
            rows = rows.take(qperm)
            if plan.tiles:
                # (the operands padded again to the blocks' 32-row steps)
                A16 = _amx.aligned((round_up(nq, 32) + 32, rows.stage1_rows.shape[1]),
                                   rows.stage1_rows.dtype, zero=True)
                A16[:nq] = rows.stage1_rows
                rows.stage1_rows = A16
                if plan.kind == "int8":
                    for name in ("stage1_sqnorms", "stage1_scales"):
                        padded = np.zeros(A16.shape[0], np.float32)
                        padded[:nq] = getattr(rows, name)
                        setattr(rows, name, padded)
        chunk = QueryChunk(rows, projection, layout, plan.kind)
        if plan.u8_dot:
            _, QN, Q8 = u8_row_stats(Qc, n_threads, shifted=True)
        else:
            Q8, QN = np.zeros((1, 1), np.int8), empty_i64
        # query i of the blocks is row query_rows[i] of Qc
        query_rows = np.arange(nq, dtype=np.int64) if qperm is None else qperm
        row_kind, Qv, Xv = exact_row_views(Qc, X)
        ex = _kp.ExactInputs(Qv, Xv, row_kind, is_int, exact_int32_sums(Qc, X, is_int),
                            plan.u8_dot, Q8, QN, XS, XN, query_rows)
        bounds = _kp.KeyBounds(projection.scale, chunk.key_add, chunk.key_slack)
        stage2 = chunk.stage2_inputs(projection, layout)
        if qperm is None:
            results = _kp.SearchResults(dist[s:e], ind[s:e], n_exact[s:e])
            kept, seeds = n_kept[s:e], n_seed_exact[s:e]
        else:
            results = _kp.SearchResults(np.empty((nq, k), np.float64),
                                       np.empty((nq, k), np.int64), np.zeros(nq, np.int64))
            kept, seeds = np.zeros(nq, np.int64), np.zeros(nq, np.int64)

        def work(part):
            _search_blocks(part, plan, layout, projection, chunk, ex, bounds, stage2, results,
                           kept, seeds, int8_family, index.built.tile_family)

        map_threads(work, blocks, n_threads)
        if qperm is not None:
            for full, part_ in ((dist, results.distances), (ind, results.rows),
                                (n_exact, results.n_exact), (n_kept, kept),
                                (n_seed_exact, seeds)):
                full[s:e][qperm] = part_
    index.stats_ = {"backend": "pruned", "n_components": projection.n_components,
                    "first_stage_components": projection.first_stage_components,
                    "first_stage": {"bf16": f"{index.built.tile_family}-bf16",
                                    "int8": f"{int8_filter_family}-int8",
                                    "float32": "blas-float32"}[plan.kind],
                    "clustered": layout.clustered,
                    "u8_dot": plan.u8_dot,
                    "exact_first_tile_per_query": plan.first_tile if plan.exact_first_tile else 0,
                    "exact_per_query_mean": float(n_exact.mean()),
                    "exact_per_query_max": int(n_exact.max()),
                    "exact_during_stage1_per_query_mean": float(n_seed_exact.mean()),
                    "stage1_kept_per_query_mean": float(n_kept.mean()),
                    "stage1_overflows": int((n_kept > plan.key_capacity).sum()),
                    "n_samples": n}


def _search_blocks(part, plan, layout, projection, chunk, ex, bounds, stage2, results, kept,
                   seeds, int8_family, tile_family):
    """One thread's blocks ``(q0, q1, w0)``: stage 1 over every tile, then
    ``pruned_block``."""
    X = ex.index_rows
    n = X.shape[0]
    qb, jt, jt2, k = plan.block, plan.first_tile, plan.later_tile, plan.k
    perm = layout.perm
    st = _block_state(plan, n)
    scratch = _kp.Stage3Scratch(np.empty(k, np.float64), np.empty(k, np.int64),
                               np.empty(n, np.float64), np.empty(n, np.float64),
                               np.empty(n, np.int64), np.empty(n, np.int64),
                               np.empty(_kp.STAGE3_BUCKETS + 1, np.int64))
    gbuf = _amx.aligned(qb * jt, np.float32)
    if plan.exact_first_tile:
        kpad = projection.int8.padded_features
        Xw = _amx.aligned((jt, kpad), np.uint8, zero=True)
        Cw = _amx.aligned((jt, round_up(qb, 32)), np.int32)
        Bq = _amx.aligned((Cw.shape[1] // 16, kpad // 4, 16, 4), np.int8)
        w_last = -1
    if plan.tiles:
        A16, B16 = chunk.rows.stage1_rows, layout.stage1_tiles
        nbp_max = round_up(qb, 32)
        T = np.empty(nbp_max, np.float32)
        OK = np.empty((nbp_max, jt2), np.float32)
        OJ = np.empty((nbp_max, jt2), np.int32)
        CNT = np.empty(nbp_max, np.int32)
        if plan.kind == "int8":
            QN, QG = chunk.rows.stage1_sqnorms, chunk.rows.stage1_scales
            XN, XS, XC = layout.stage1_sqnorms, layout.stage1_scales, layout.stage1_sums
            tile_filter = _amx.Int8FilterPlan(A16, B16, QN, QG, XN, XS, XC, T, OK, OJ, CNT,
                                              family=plan.int8_family)
            xc_shift = 1 if plan.int8_family == "avx2" else 0
            s32buf = _amx.aligned(nbp_max * round_up(jt, 32), np.int32)
        else:
            tile_filter = _amx.FilterPlan(A16, B16, T, OK, OJ, CNT, family=tile_family)
    for q0, q1, w0 in part:
        nb = q1 - q0
        _reset(st)
        for ti, (j0, j1) in enumerate(block_tiles(w0, n, jt, jt2)):
            L = j1 - j0
            if ti == 0 and plan.exact_first_tile:
                rows_w = perm[j0:j1]
                if j0 != w_last:    # (blocks of a cluster follow each other)
                    _kp.gather_rows(X, rows_w, Xw)
                    w_last = j0
                _kp.pack_rows_s8(ex.queries_s8, ex.query_rows[q0:q1], Bq)
                _amx.gemm_u8s8(Xw[:L], Bq, Cw, round_up(nb, 32), family=int8_family)
                _kp.window_exact(Cw[:L], rows_w, q0, nb, ex, bounds, st)
                continue
            if plan.tiles:
                Lp = round_up(L, 32)
                nbp = round_up(nb, 32)
                if ti > 0:
                    # later tiles: the product is filtered in L1 by each
                    # row's current limit, never stored
                    _kp.tile_limits(st.seed_keys, st.seed_counts, st.key_limits, nb, T[:nbp])
                    tile_filter(q0, nbp, j0, Lp)
                    _kp.scan_sparse(OK, OJ, CNT, L, j0, perm, q0, nb, ex, bounds, st)
                    continue
                G = gbuf[:nbp * Lp].reshape(nbp, Lp)
                if plan.kind == "int8":
                    # the exact int32 sums, then the kernel's float32 keys
                    S = s32buf[:nbp * Lp].reshape(nbp, Lp)
                    _amx.gemm_u8s8(A16[q0:q0 + nbp], B16[j0 // 16:(j0 + Lp) // 16], S, Lp,
                                   family=plan.int8_family)
                    _kproj.int8_keys(S, nb, L, QN[q0:], QG[q0:], XN[j0:], XS[j0:], XC[j0:],
                                     xc_shift, G)
                else:
                    _amx.gemm(A16[q0:q0 + nbp], B16, G, Lp, j0, family=tile_family)
                G = G[:nb]
            else:
                # a C-contiguous tile: numba's loops over it vectorise
                G = gbuf[:nb * L].reshape(nb, L)
                np.matmul(chunk.gemm_rows[q0:q0 + nb], layout.stage1_gemm[:, j0:j0 + L], out=G)
            _kp.scan_collect(G, L, j0, perm, q0, ex, bounds, st)
        _kp.pruned_block(ex, q0, nb, bounds, st, stage2, results, scratch)
        kept[q0:q0 + nb] = st.n_cand[:nb]
        seeds[q0:q0 + nb] = st.n_measured[:nb]
