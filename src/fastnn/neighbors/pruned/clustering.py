"""The order of the index in the pruned search: near points together, so a
block of queries meets its own cluster first (its threshold starts near
the final one). Only the speed depends on it, never an answer."""

import numpy as np

from ...kernels import cluster as _kc

CLUSTER_DIMS = 32        # first projected coordinates the index is clustered on
KMEANS_SAMPLE = 8192     # rows Lloyd's iterations run on
KMEANS_ITERATIONS = 5
MAX_CLUSTERS = 256
MIN_CLUSTERS = 4         # fewer tiles than this: the index stays unclustered
CENTROID_TILE_ROWS = 65536   # rows per distance block of nearest_centroid


def nearest_centroid(W, centroids, rows=CENTROID_TILE_ROWS):
    """Index of the nearest centroid of each row of ``W`` (float32; row
    tiles keep the distance block small)."""
    out = np.empty(W.shape[0], np.int64)
    cn = np.einsum("ij,ij->i", centroids, centroids)
    for s in range(0, W.shape[0], rows):
        _kc.nearest_from_products(W[s:s + rows] @ centroids.T, cn, out[s:s + rows])
    return out


def cluster_order(W, n_clusters, seed):
    """An order of the index points in which near points sit together:
    k-means (Lloyd, on a sample) on ``W`` (their first projected
    coordinates, float32), clusters in the order of their centroids' first
    coordinate (neighbouring clusters then lie near each other too).

    Returns ``(perm, starts, centroids)``: the points of cluster ``c`` are
    ``perm[starts[c]:starts[c + 1]]``, in index order.
    """
    n, dim = W.shape
    rs = np.random.RandomState(seed)
    S = W[np.sort(rs.choice(n, min(n, KMEANS_SAMPLE), replace=False))]
    cen = S[rs.choice(S.shape[0], n_clusters, replace=False)].astype(np.float32)
    sums = np.empty((n_clusters, dim), np.float64)
    cnt = np.empty(n_clusters, np.int64)
    for _ in range(KMEANS_ITERATIONS):
        _kc.centroid_sums(S, nearest_centroid(S, cen), sums, cnt)
        full = cnt > 0
        cen[full] = sums[full] / cnt[full, None]
    cen = np.ascontiguousarray(cen[np.argsort(cen[:, 0], kind="stable")])
    perm, starts = order_by_centroids(W, cen)
    return perm, starts, cen


def order_by_centroids(W, centroids):
    """``(perm, starts)``: the rows of ``W`` grouped by nearest centroid."""
    perm = np.empty(W.shape[0], np.int64)
    starts = np.empty(centroids.shape[0] + 1, np.int64)
    _kc.counting_order(nearest_centroid(W, centroids), centroids.shape[0], perm, starts)
    return perm, starts


def query_blocks(query_keys, layout, nq, block, first_tile):
    """Blocks ``(q0, q1, w0)`` of at most ``block`` queries and the position
    ``w0`` of their first stage-1 tile (``first_tile`` wide); with a
    clustered index, queries grouped by nearest centroid (the order
    ``qperm``, else None) and the first tile on their cluster."""
    if layout.centroids is None or nq == 0:
        return [(q0, min(nq, q0 + block), 0) for q0 in range(0, nq, block)], None
    cen, starts = layout.centroids, layout.cluster_starts
    n = int(starts[-1])
    lab = nearest_centroid(np.ascontiguousarray(query_keys[:, :cen.shape[1]]), cen)
    qperm = np.argsort(lab, kind="stable")
    lab = lab[qperm]
    cuts = np.concatenate(([0], np.flatnonzero(np.diff(lab)) + 1, [nq]))
    blocks = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        c = lab[a]
        w0 = (int(starts[c] + starts[c + 1]) - first_tile) // 2
        w0 = max(0, min(w0, n - first_tile)) // 32 * 32
        blocks += [(int(q0), int(min(b, q0 + block)), w0) for q0 in range(a, b, block)]
    return blocks, qperm


def block_tiles(w0, n, first_tile, later_tile):
    """Stage-1 tiles ``(j0, j1)`` of positions for a block whose first
    (dense) tile starts at ``w0``: then outwards, alternately right and
    left, ``later_tile`` wide (boundaries stay multiples of 32)."""
    w1 = min(n, w0 + first_tile)
    tiles = [(w0, w1)]
    right = [(j, min(n, j + later_tile)) for j in range(w1, n, later_tile)]
    left = [(max(0, j - later_tile), j) for j in range(w0, 0, -later_tile)]
    for t in range(max(len(right), len(left))):
        tiles += right[t:t + 1] + left[t:t + 1]
    return tiles
