"""The index's side of the pruned search, laid out for the kernels: the
cluster order, one cache line of per-row facts (``aux``) and the stage-1
operand (bfloat16 tiles for the tile kernels, int8 rows with their scales
for the int8 first stage on AVX-512 VNNI or AVX2, a float32 GEMM operand on
the portable path)."""

from dataclasses import dataclass

import numpy as np

from ..._threads import map_threads
from ...kernels import amx as _amx
from ...kernels import projection as _kproj
from ..validation import round_up
from .clustering import CLUSTER_DIMS, MAX_CLUSTERS, MIN_CLUSTERS, cluster_order, \
    order_by_centroids
from .projection import INT8_KEY_STEP, ProjectedRows, key_residual

# positions per chunk when the bfloat16 operand is written (a thread writes
# whole 16-column groups)
STAGE1_WRITE_CHUNK = 4096


@dataclass
class IndexLayout:
    """The index rows' projected state (rows in row order unless said)."""
    perm: np.ndarray            # position -> row of the stage-1 order
    cluster_starts: object      # (clusters + 1,) or None (unclustered)
    centroids: object           # (clusters, dims) float32 or None
    keys: np.ndarray            # W1 (n, m1 + 1) float32
    tail: np.ndarray            # Z2 (n, m - m1) float32
    aux: np.ndarray             # (n, 4): residuals at mh and m, key residual, bf16 bound F
    key_error: np.ndarray       # E1 (n,)
    key_sqnorms32: np.ndarray   # nx1 (n,) float32
    key_norm_max: float         # max a1
    tail_error_max: np.ndarray  # (2,) max E
    key_error_max: float        # max E1
    # the first stage this layout serves ('bf16', 'int8', 'float32'; None:
    # saved before the kind was recorded, rebuilt on load)
    stage1_kind: object = None
    # stage-1 operand: bfloat16 tiles or int8 rows (tile kernels) ...
    stage1_tiles: object = None     # B16 / B8, in stage-1 order
    stage1_width: int = 0           # K16 / K8
    stage1_error_max: float = 0.0   # max F
    stage1_norm_max: float = 0.0    # max a16 / a8
    # ... with, for int8, per position (padded to the packed columns)
    stage1_sqnorms: object = None   # XN float32 |h|^2
    stage1_scales: object = None    # XS float32 s
    stage1_sums: object = None      # XC int32 128 sum v
    # ... or the float32 GEMM operand (portable path), in stage-1 order
    stage1_gemm: object = None      # W1T (m1 + 3, n)

    @property
    def clustered(self):
        return self.centroids is not None

    def rows(self):
        """The per-row state as ``ProjectedRows`` (maxima where per-row
        values are not kept), for extending the layout."""
        return ProjectedRows(tail=self.tail, residuals=self.aux[:, :2],
                             tail_error=self.tail_error_max[None, :],
                             keys=self.keys, key_norms=np.array([self.key_norm_max]),
                             key_sqnorms32=self.key_sqnorms32, key_error=self.key_error)


def stage1_tiles(keys, key_error, perm, m1, n_threads):
    """The index's bfloat16 stage-1 operand (``stage1_rows_index``), position
    ``p`` holding row ``perm[p]``, written in position order by
    ``n_threads`` threads; with each row's bound ``F`` and norm ``a16``."""
    n = keys.shape[0]
    K16 = round_up(m1 + 7, _amx.KB)
    B16 = _amx.aligned((round_up(n, 32) // 16, K16 // 2, 16, 2), np.uint16, zero=True)
    F = np.empty(n, np.float64)
    a16 = np.empty(n, np.float64)
    key_bits = keys.view(np.uint32)

    def work(starts):
        row = np.empty(K16, np.uint16)
        for p0 in starts:
            _kproj.stage1_rows_index(keys, key_bits, key_error, perm, p0,
                                 min(n, p0 + STAGE1_WRITE_CHUNK), row, B16, F, a16)

    map_threads(work, list(range(0, n, STAGE1_WRITE_CHUNK)), n_threads)
    return B16, F, a16


def stage1_int8(keys, key_error, perm, m1, n_threads):
    """The index's int8 stage-1 operand (``stage1_int8_index``), position
    ``p`` holding row ``perm[p]``, written in position order by ``n_threads``
    threads: ``(B8, XN, XS, XC)`` and per row ``(F, a8, h_last)``."""
    n = keys.shape[0]
    K8 = round_up(m1 + 1, INT8_KEY_STEP)
    n_pad = round_up(n, 32)
    B8 = _amx.aligned((n_pad // 16, K8 // 4, 16, 4), np.int8, zero=True)
    XN = np.zeros(n_pad, np.float32)
    XS = np.zeros(n_pad, np.float32)
    XC = np.zeros(n_pad, np.int32)
    F, a8, h_last = (np.empty(n, np.float64) for _ in range(3))

    def work(starts):
        row = np.empty(K8, np.int64)
        for p0 in starts:
            _kproj.stage1_int8_index(keys, key_error, perm, p0, min(n, p0 + STAGE1_WRITE_CHUNK),
                                     row, B8, XN, XS, XC, F, a8, h_last)

    map_threads(work, list(range(0, n, STAGE1_WRITE_CHUNK)), n_threads)
    return (B8, XN, XS, XC), (F, a8, h_last)


def build_layout(rows, m1, options, first_stage, n_threads, random_state, centroids=None):
    """The layout of projected index ``rows`` (all index rows, in row order):
    the cluster order (k-means, or the nearest of the given ``centroids``),
    the per-row ``aux`` line and the operand of the ``first_stage``
    (``projection.FIRST_STAGES``)."""
    n = rows.keys.shape[0]
    n_clusters = min(MAX_CLUSTERS, n // options.first_tile_width(n))   # (about a tile each)
    starts = None
    if centroids is not None:
        perm, starts = order_by_centroids(
            np.ascontiguousarray(rows.keys[:, :centroids.shape[1]]), centroids)
    elif n_clusters >= MIN_CLUSTERS:
        perm, starts, centroids = cluster_order(
            np.ascontiguousarray(rows.keys[:, :min(m1, CLUSTER_DIMS)]), n_clusters,
            random_state)
    else:
        perm = np.arange(n, dtype=np.int64)
    # per point, in one cache line: the residual norms (at mh and m), the
    # key vectors' residual coordinate and their bound F (bfloat16 keys)
    aux = np.zeros((n, 4), np.float64)
    aux[:, :2] = rows.residuals
    aux[:, 2] = key_residual(rows.keys, first_stage == "bf16")
    layout = IndexLayout(perm=perm, cluster_starts=starts, centroids=centroids,
                         stage1_kind=first_stage,
                         keys=rows.keys, tail=rows.tail, aux=aux, key_error=rows.key_error,
                         key_sqnorms32=rows.key_sqnorms32,
                         key_norm_max=float(rows.key_norms.max()),
                         tail_error_max=rows.tail_error.max(axis=0),
                         key_error_max=float(rows.key_error.max()))
    if first_stage == "int8":
        # the first-stage vectors as integers times a scale per row (their
        # distance to the float32 ones, plus E1, is the point's bound F),
        # with the float32 squared norms, scales and shifted sums the
        # kernel's key takes
        (B8, XN, XS, XC), (F, a8, h_last) = stage1_int8(rows.keys, rows.key_error, perm, m1,
                                                        n_threads)
        aux[:, 2] = h_last
        aux[:, 3] = F
        layout.stage1_tiles = B8
        layout.stage1_width = B8.shape[1] * 4
        layout.stage1_error_max = float(F.max())
        layout.stage1_norm_max = float(a8.max())
        layout.stage1_sqnorms, layout.stage1_scales, layout.stage1_sums = XN, XS, XC
    elif first_stage == "bf16":
        # the first-stage vectors rounded to bfloat16 (their distance to the
        # float32 ones, plus E1, is the point's bound F), ones and the
        # squared norm of the rounded vector in three bfloat16 pieces; the
        # query side holds -2 w1(q), its norm pieces and ones (the product
        # then yields |w1(q)|^2 + |w1(x)|^2 - 2 w1(q).w1(x) of the rounded
        # vectors)
        B16, F, a16 = stage1_tiles(rows.keys, rows.key_error, perm, m1, n_threads)
        aux[:, 3] = F
        layout.stage1_tiles = B16
        layout.stage1_width = B16.shape[1] * 2
        layout.stage1_error_max = float(F.max())
        layout.stage1_norm_max = float(a16.max())
    else:
        # the first-stage vectors, their float32 squared norms and ones (the
        # query side adds its own norm: the GEMM then yields |w1(q)|^2 +
        # |w1(x)|^2 - 2 w1(q).w1(x) directly)
        W1T = np.empty((m1 + 3, n), np.float32)
        W1T[:m1 + 1] = rows.keys.T
        W1T[m1 + 1] = rows.key_sqnorms32
        W1T[m1 + 2] = 1.0
        layout.stage1_gemm = W1T if centroids is None else np.ascontiguousarray(W1T[:, perm])
    return layout


def extend_layout(layout, new_rows, m1, options, first_stage, n_threads, random_state):
    """The layout of the index with ``new_rows`` appended (the centroids
    kept: the new rows join their nearest cluster)."""
    old = layout.rows()
    both = ProjectedRows(
        tail=np.concatenate([np.asarray(old.tail), new_rows.tail]),
        residuals=np.concatenate([np.asarray(old.residuals), new_rows.residuals]),
        tail_error=np.vstack([old.tail_error, new_rows.tail_error.max(axis=0)[None, :]]),
        keys=np.concatenate([np.asarray(old.keys), new_rows.keys]),
        key_norms=np.array([layout.key_norm_max, float(new_rows.key_norms.max())]),
        key_sqnorms32=np.concatenate([np.asarray(old.key_sqnorms32), new_rows.key_sqnorms32]),
        key_error=np.concatenate([np.asarray(old.key_error), new_rows.key_error]))
    return build_layout(both, m1, options, first_stage, n_threads, random_state,
                        layout.centroids)
