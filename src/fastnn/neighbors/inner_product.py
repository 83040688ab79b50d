"""Exact maximum-inner-product search: ``NearestNeighborsIndex(X,
metric='ip')``.

Neighbours are ordered by decreasing product ``q . x`` (``farthest=True``:
increasing), ties to the lower row; the returned "distances" are the
products. The product is exact: an integer for integer data, else a float64
sum in index order (``kernels.dot.dot_exact``). The search: float64 GEMM
tiles give every product within ``(d + 2) u |q| max|x|`` (``u`` = 2**-53),
the best ``k + 8`` by that key are measured exactly, and a query whose best
left-out key could still reach (or tie) its k-th exact product is scanned
exactly in full. No projection bound prunes it yet: every (query, row)
product is computed once by BLAS.
"""

import numpy as np

from .._threads import run_in_parts
from ..kernels import dot as _kd
from .registry import Backend, register
from .topk import RERANK_EXTRA
from .validation import UNIT_ROUNDOFF_F32, UNIT_ROUNDOFF_F64

# index rows per GEMM tile, queries per chunk
INDEX_TILE_ROWS = 8192
QUERY_CHUNK_ROWS = 2048


@register
class InnerProductBackend(Backend):
    name = "inner-product"
    metrics = ("ip",)
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        search(index, request.queries, request.is_int, request.k, request.farthest,
               request.n_threads, request.chunk_size, dist, ind)


def search(index, Q, is_int, k, farthest, n_threads, chunk_size, dist, ind):
    """Fill ``dist`` / ``ind`` (``(nq, k)``) with the top-k products."""
    X = index.X
    n, d = X.shape
    sign = 1.0 if farthest else -1.0
    kk = min(n, k + RERANK_EXTRA)
    # float32 data and queries: a float32 GEMM (every product within
    # (d + 2) u32 |q| |x|; the exact re-rank settles the order); integers and
    # float64 data: float64 (integers then exactly: check_data bounds them)
    f32 = X.dtype == np.float32 and Q.dtype == np.float32
    gemm_dtype = np.float32 if f32 else np.float64
    unit = UNIT_ROUNDOFF_F32 if f32 else UNIT_ROUNDOFF_F64
    tile = INDEX_TILE_ROWS
    qchunk = chunk_size or QUERY_CHUNK_ROWS
    # (the index's cached squared row norms: no float64 copy of X per search)
    xnorm_max = float(np.sqrt(index.xn.max())) if n else 0.0
    full = 0
    for s in range(0, Q.shape[0], qchunk):
        e = min(Q.shape[0], s + qchunk)
        Qc = Q[s:e]
        Qf = Qc.astype(gemm_dtype)
        Q64 = Qc.astype(np.float64)
        nq = e - s
        # (integers in float64: every GEMM product is exact, check_data bounds them)
        err = (np.zeros(nq) if is_int and not f32 else
               (d + 2) * unit * 1.01 * np.sqrt(np.einsum("ij,ij->i", Q64, Q64)) * xnorm_max)
        cand_d = np.empty((nq, kk), np.float64)
        cand_i = np.empty((nq, kk), np.int64)
        counts = np.zeros(nq, np.int64)
        for j0 in range(0, n, tile):
            j1 = min(n, j0 + tile)
            G = Qf @ X[j0:j1].astype(gemm_dtype, copy=False).T
            run_in_parts(lambda q0, q1: _kd.merge_products(G, q0, q1, j0, sign, cand_d, cand_i,
                                                           counts), nq, n_threads)
        kd = np.empty((nq, k), np.float64)
        ki = np.empty((nq, k), np.int64)
        need = np.zeros(nq, np.bool_)
        run_in_parts(lambda q0, q1: _kd.rerank_products(Qc, X, q0, q1, cand_d, cand_i, counts,
                                                        sign, is_int, err, k, kd, ki, need),
                     nq, n_threads)
        rows = np.flatnonzero(need).astype(np.int64)
        if rows.size:
            full += rows.size
            run_in_parts(lambda a, b: _kd.scan_products(Qc, X, rows[a:b], sign, is_int, kd, ki),
                         rows.size, n_threads)
        dist[s:e] = sign * kd
        ind[s:e] = ki
    index.stats_ = {"backend": "brute", "metric": "ip", "full_scans": int(full)}
