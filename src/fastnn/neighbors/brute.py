"""Brute force: float64 GEMM tiles of approximate distances, a fused top-k
in numba, an exact re-rank (``topk.rerank_exact``); and, for large k, the
same distances to every row, a selection of the k-th and a stable sort."""

import numpy as np

from .._threads import map_threads, run_kernel
from ..kernels import distances as _k
from .registry import EUCLIDEAN, LARGE_K, Backend, register
from .topk import RERANK_EXTRA, Candidates, rerank_exact
from .validation import gemm_error_scale, row_sqnorms

# float64 bytes of one tile of index rows (fits L2/L3 with its GEMM output)
INDEX_TILE_BYTES = 64 << 20
# float64 bytes of one chunk of queries' GEMM rows
QUERY_CHUNK_BYTES = 128 << 20
# bytes of one part's products of a tile (``_tile_by_query_parts``): a GEMM
# of fewer queries repacks the tile for too few rows (CIFAR raw, a tile of
# 2,730 rows: 64 queries a part 1.25 s, 512 0.88 s), of more leaves its
# products out of cache (HOG, 8,192 rows: 256 queries 0.58 s, 512 0.62 s)
MERGE_PART_BYTES = 16 << 20
# bytes of one chunk of large-k distance rows (queries x every index row)
LARGE_K_CHUNK_BYTES = 64 << 20


def tile_rows(n_features, budget_bytes=INDEX_TILE_BYTES):
    """Rows of float64 data of ``n_features`` that fit ``budget_bytes``
    (between 64 and 8,192)."""
    return max(64, min(8192, budget_bytes // (8 * max(1, n_features))))


def _part_rows(n_queries, tile_rows_count, n_threads):
    """Queries per part of a tile (``_tile_by_query_parts``):
    equal parts, a multiple of the threads, each near ``MERGE_PART_BYTES``
    of products."""
    n_parts = -(-n_queries // max(1, MERGE_PART_BYTES // (8 * max(1, tile_rows_count))))
    n_parts = min(n_queries, -(-n_parts // n_threads) * n_threads)
    return max(1, -(-n_queries // max(1, n_parts)))


def _tile_by_query_parts(Qf, Xt, n_threads, finish, out=None):
    """A tile of index rows ``Xt`` (float64) against the queries ``Qf`` by
    parts of the queries over the threads (``map_threads``; about
    ``MERGE_PART_BYTES`` of products each): each part's GEMM on one BLAS
    thread (into ``out``'s rows when given), then ``finish(r0, r1,
    products)`` while they are in cache. (A multi-threaded GEMM followed by
    parallel work left OpenBLAS' worker spinning through it, on one of the
    cores.) The parts may change the approximate products' last bits, never
    an answer: both callers measure their candidates exactly."""
    XtT = Xt.T
    nq = Qf.shape[0]
    part_rows = _part_rows(nq, Xt.shape[0], n_threads)

    def work(starts):
        for r0 in starts:
            r1 = min(nq, r0 + part_rows)
            if out is None:
                G = Qf[r0:r1] @ XtT
            else:
                G = out[r0:r1]
                np.matmul(Qf[r0:r1], XtT, out=G)
            finish(r0, r1, G)

    map_threads(work, list(range(0, nq, part_rows)), n_threads)


def _merge_tile(Qf, Xt, query_sqnorms, row_sqnorms, j0, sign, candidates, n_threads):
    """One tile of index rows ``Xt`` (from row ``j0``) merged into the
    queries' approximate top lists (``_tile_by_query_parts``)."""
    _tile_by_query_parts(Qf, Xt, n_threads, lambda r0, r1, G: _k.merge_tile_serial(
        G, query_sqnorms[r0:r1], row_sqnorms, j0, sign, candidates.distances[r0:r1],
        candidates.rows[r0:r1], candidates.counts[r0:r1]))


@register
class BruteBackend(Backend):
    name = "brute"
    metrics = EUCLIDEAN

    @staticmethod
    def search(index, request, dist, ind):
        Q, is_int, k = request.queries, request.is_int, request.k
        n_threads = request.n_threads
        sign = -1.0 if request.farthest else 1.0
        kk = min(index.n_samples, k + RERANK_EXTRA)
        tile = tile_rows(index.n_features)
        qchunk = request.chunk_size or max(256, tile_rows(index.n_features, QUERY_CHUNK_BYTES))
        qn_all = row_sqnorms(Q, is_int, n_threads)
        full_scans = 0
        for s in range(0, Q.shape[0], qchunk):
            e = min(Q.shape[0], s + qchunk)
            Qc = Q[s:e]
            Qf = Qc.astype(np.float64)
            candidates = Candidates.empty(e - s, kk)
            for j0 in range(0, index.n_samples, tile):
                j1 = min(index.n_samples, j0 + tile)
                _merge_tile(Qf, index.X[j0:j1].astype(np.float64), qn_all[s:e],
                            index.xn[j0:j1], j0, sign, candidates, n_threads)
            full_scans += rerank_exact(index, Qc, is_int, qn_all[s:e], candidates, sign, k,
                                       dist[s:e], ind[s:e], n_threads)
        index.stats_ = {"backend": "brute", "full_scans": full_scans}


def _distance_tile(Qf, Xt, query_sqnorms, row_sqnorms, out, n_threads):
    """``out`` (queries x the tile's rows): approximate squared distances of
    the queries to the tile's rows ``Xt`` (``_tile_by_query_parts``)."""
    _tile_by_query_parts(Qf, Xt, n_threads, lambda r0, r1, G: _k.finish_pairwise_serial(
        G, query_sqnorms[r0:r1], row_sqnorms, True, G), out)


@register
class LargeKBackend(Backend):
    """k > 256 (up to a full ranking, k = n) for the Euclidean metrics."""
    name = "large-k"
    metrics = EUCLIDEAN
    min_k = LARGE_K + 1
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        Q, is_int, k = request.queries, request.is_int, request.k
        n_threads = request.n_threads
        sign = -1.0 if request.farthest else 1.0
        n = index.n_samples
        tile = tile_rows(index.n_features)
        qchunk = request.chunk_size or max(1, LARGE_K_CHUNK_BYTES // (8 * n))
        qn_all = row_sqnorms(Q, is_int, n_threads)
        err = gemm_error_scale(index.n_features, is_int)
        err_x_max = err * float(index.xn.max())
        for s in range(0, Q.shape[0], qchunk):
            e = min(Q.shape[0], s + qchunk)
            Qf = Q[s:e].astype(np.float64)
            A = np.empty((e - s, n), np.float64)
            for j0 in range(0, n, tile):
                j1 = min(n, j0 + tile)
                _distance_tile(Qf, index.X[j0:j1].astype(np.float64), qn_all[s:e],
                               index.xn[j0:j1], A[:, j0:j1], n_threads)
            run_kernel(_k.select_exact_parallel, _k.select_exact_serial, n_threads,
                       A, Q[s:e], index.X, sign, is_int, err * qn_all[s:e], err_x_max, k,
                       dist[s:e], ind[s:e])
        index.stats_ = {"backend": "large-k"}
