"""Manhattan (L1) distance: every exact distance (no bound prunes it), index
tiles that stay in cache, queries over threads; sorted top lists, or for
k > 256 whole rows of distances and a stable sort."""

import numpy as np

from .._threads import run_kernel
from ..kernels import manhattan as _l1
from .registry import LARGE_K, Backend, register
from .validation import exact_int32_sums

# bytes of one tile of index rows (integers as stored, floats as float64):
# stays in L2 while every query of a chunk passes over it
TILE_BYTES = 256 << 10
# bytes of one chunk of large-k distance rows
LARGE_K_CHUNK_BYTES = 64 << 20


def tile_rows(X, is_int):
    """Index rows per Manhattan tile (``TILE_BYTES`` of them)."""
    item = X.dtype.itemsize if is_int else 8
    return max(16, TILE_BYTES // max(1, X.shape[1] * item))


def transposed_tile(X, j0, j1, is_int):
    """The float64 transposed tile the float kernels read (a dummy for
    integers)."""
    if is_int:
        return np.zeros((1, 1), np.float64)
    return np.ascontiguousarray(X[j0:j1].T, dtype=np.float64)


def distance_rows(X, Y, is_int, n_threads, out):
    """Exact Manhattan distances of the rows of X to those of Y into ``out``."""
    acc32 = exact_int32_sums(X, Y, is_int)
    tile = tile_rows(Y, is_int)
    for j0 in range(0, Y.shape[0], tile):
        j1 = min(Y.shape[0], j0 + tile)
        run_kernel(_l1.l1_rows_parallel, _l1.l1_rows_serial, n_threads,
                   X, Y, transposed_tile(Y, j0, j1, is_int), j0, j1, is_int, acc32,
                   out[:, j0:j1])


@register
class ManhattanBackend(Backend):
    name = "manhattan"
    metrics = ("manhattan",)
    max_k = float("inf")

    @staticmethod
    def search(index, request, dist, ind):
        Q, is_int, k, n_threads = request.queries, request.is_int, request.k, request.n_threads
        X = index.X
        sign = -1.0 if request.farthest else 1.0
        n = index.n_samples
        acc32 = exact_int32_sums(Q, X, is_int)
        tile = tile_rows(X, is_int)
        if k <= LARGE_K:
            qchunk = request.chunk_size or Q.shape[0]
            for s in range(0, Q.shape[0], qchunk):
                e = min(Q.shape[0], s + qchunk)
                kd = np.empty((e - s, k), np.float64)
                ki = np.empty((e - s, k), np.int64)
                counts = np.zeros(e - s, np.int64)
                for j0 in range(0, n, tile):
                    j1 = min(n, j0 + tile)
                    run_kernel(_l1.l1_topk_parallel, _l1.l1_topk_serial, n_threads,
                               Q[s:e], X, transposed_tile(X, j0, j1, is_int), j0, j1,
                               sign, is_int, acc32, kd, ki, counts)
                dist[s:e] = sign * kd
                ind[s:e] = ki
        else:
            qchunk = request.chunk_size or max(1, LARGE_K_CHUNK_BYTES // (8 * n))
            for s in range(0, Q.shape[0], qchunk):
                e = min(Q.shape[0], s + qchunk)
                D = np.empty((e - s, n), np.float64)
                distance_rows(Q[s:e], X, is_int, n_threads, D)
                order = np.argsort(sign * D, axis=1, kind="stable")[:, :k]
                ind[s:e] = order
                dist[s:e] = np.take_along_axis(D, order, 1)
        index.stats_ = {"backend": "brute", "metric": "manhattan"}
