"""fastnn on Dask: HOG over dask arrays and exact k-NN with a sharded index.

Needs the optional extra: ``pip install fastnn[dask]`` (importing fastnn
itself never imports dask).

* :func:`hog` — HOG of a dask array of images chunked along the sample
  axis, lazily (``map_blocks``; one output row per image).
* :class:`ShardedIndex` — the index split into row shards, one
  :class:`fastnn.NearestNeighborsIndex` per shard, built and kept on the
  workers. A query asks every shard for its local top-k (global indices) and
  a tree reduction merges the lists by (squared distance, index): the answer
  is identical to the single-machine engine, ties included.
* :class:`DaskKNeighborsClassifier` — fit / predict / predict_proba /
  kneighbors on dask (or numpy) arrays; dask in, dask out.

Workers run fastnn's serial kernels (``n_jobs=1``: numba's parallel layer
inside a worker's threads can abort the process, and one thread per task
avoids oversubscription); parallelism comes from Dask.
"""

import numpy as np

from .estimators import _check_weights, _resolve_metric, vote_proba
from .feature import hog as _hog
from .feature import hog_output_shape
from .neighbors import NearestNeighborsIndex
from .neighbors.topk import merge_sorted
from .neighbors.validation import check_data, check_k, check_metric

__all__ = ["hog", "ShardedIndex", "DaskKNeighborsClassifier"]


def _require_dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError("fastnn.distributed needs dask: pip install 'fastnn[dask]'") from exc
    return dask, da


# ----------------------------------------------------------------------------
# HOG
# ----------------------------------------------------------------------------
def _hog_block(block, kw):
    return _hog(block, n_jobs=1, **kw)


def hog(images, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3),
        block_norm="L2-Hys", transform_sqrt=False, *, channel_axis=None, dtype=None):
    """HOG feature vectors of a dask array of images, lazily.

    ``images`` is ``(n, rows, cols)`` or ``(n, rows, cols, channels)``; it is
    rechunked to whole images (chunks only along the sample axis). Returns a
    dask array ``(n, n_features)`` whose rows equal :func:`fastnn.hog`'s
    (which equals ``skimage.feature.hog`` per image).
    """
    dask, da = _require_dask()
    if not isinstance(images, da.Array):
        images = da.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be a dask array (n, rows, cols[, channels]), "
                         f"got ndim={images.ndim}")
    if channel_axis is not None and channel_axis not in (-1, images.ndim - 1):
        raise ValueError("channel_axis must be the last axis (-1) for dask image stacks")
    if images.ndim == 4 and channel_axis is None:
        raise ValueError("4-D image stacks need channel_axis=-1")
    kw = dict(orientations=orientations, pixels_per_cell=pixels_per_cell,
              cells_per_block=cells_per_block, block_norm=block_norm,
              transform_sqrt=transform_sqrt, channel_axis=-1 if images.ndim == 4 else None,
              dtype=dtype)
    # validate parameters and learn the output dtype on one small image
    probe = _hog(np.zeros((1,) + images.shape[1:], images.dtype), **kw)
    n_feat = int(np.prod(hog_output_shape(images.shape[1:3], orientations, pixels_per_cell,
                                          cells_per_block)))
    images = images.rechunk({i: -1 for i in range(1, images.ndim)})
    return images.map_blocks(_hog_block, kw, dtype=probe.dtype,
                             drop_axis=list(range(2, images.ndim)),
                             chunks=(images.chunks[0], (n_feat,)))


# ----------------------------------------------------------------------------
# Sharded exact search
# ----------------------------------------------------------------------------
def _build_shard(block, backend, metric):
    # shards answer squared distances (euclidean: one square root at the end)
    metric = "manhattan" if metric == "manhattan" else "sqeuclidean"
    return NearestNeighborsIndex(block, metric=metric, backend=backend, n_jobs=1)


def _query_shard(index, Q, k, offset, farthest):
    k = min(k, index.n_samples)
    d, i = index.kneighbors(Q, k, farthest=farthest, n_jobs=1)
    return d, i + offset


def _tree_reduce(parts, fn, dask):
    parts = list(parts)
    while len(parts) > 1:
        nxt = [dask.delayed(fn)(parts[t], parts[t + 1]) for t in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def _finish(res, k, metric):
    d, i = res
    d = np.sqrt(d) if metric == "euclidean" else d
    return d[:, :k], i[:, :k]


class ShardedIndex:
    """Exact k-NN over an index split into row shards kept on Dask workers.

    Parameters
    ----------
    X : dask array or array_like (n_samples, n_features)
        Each row chunk becomes one shard (rechunk to choose shard sizes).
    metric : {'euclidean', 'sqeuclidean', 'manhattan'}
    backend : str
        The per-shard backend of :class:`fastnn.NearestNeighborsIndex`.
    persist : bool
        Build the shard indexes now and keep them in worker memory.
    """

    def __init__(self, X, metric="euclidean", backend="auto", persist=True):
        dask, da = _require_dask()
        metric = check_metric(metric)
        if not isinstance(X, da.Array):
            X = check_data(X, "X")[0]
            X = da.from_array(X, chunks=(max(1, len(X) // 2), -1))   # two shards
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got ndim={X.ndim}")
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
        if X.shape[0] == 0:
            raise ValueError("X is empty: 0 samples")
        X = X.rechunk({1: -1})
        self.metric = metric
        self.backend = backend
        self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.offsets = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(np.int64)
        self.shard_sizes = np.asarray(X.chunks[0], np.int64)
        blocks = X.to_delayed().ravel()
        self._shards = [dask.delayed(_build_shard)(b, backend, metric) for b in blocks]
        if persist:
            self._shards = list(dask.persist(*self._shards))

    def _delayed_query(self, Q, k, farthest):
        dask, _ = _require_dask()
        parts = [dask.delayed(_query_shard)(s, Q, k, int(o), farthest)
                 for s, o in zip(self._shards, self.offsets)]
        merged = _tree_reduce(parts, lambda a, b: merge_sorted(a, b, k, farthest), dask)
        return dask.delayed(_finish)(merged, k, self.metric)

    def kneighbors(self, Q, n_neighbors=1, return_distance=True, farthest=False):
        """``(distances, indices)`` of the k nearest (or farthest) index rows.

        numpy queries give numpy results (computed now); a dask array of
        queries gives lazy dask arrays chunked like its rows.
        """
        dask, da = _require_dask()
        k = check_k(n_neighbors, self.n_samples)
        if isinstance(Q, da.Array):
            if Q.ndim != 2 or Q.shape[1] != self.n_features:
                raise ValueError(f"query must be 2-D with {self.n_features} features, "
                                 f"got shape {Q.shape}")
            Q = Q.rechunk({1: -1})
            ds, is_ = [], []
            for blk, n in zip(Q.to_delayed().ravel(), Q.chunks[0]):
                res = self._delayed_query(blk, k, farthest)
                ds.append(da.from_delayed(res[0], (n, k), np.float64))
                is_.append(da.from_delayed(res[1], (n, k), np.int64))
            d, i = da.concatenate(ds), da.concatenate(is_)
        else:
            Q, _ = check_data(Q, "query", allow_empty=True)
            if Q.shape[1] != self.n_features:
                raise ValueError(f"query has {Q.shape[1]} features, but the index has "
                                 f"{self.n_features} features")
            d, i = self._delayed_query(Q, k, farthest).compute()
        return (d, i) if return_distance else i


def _argmax_labels(proba, classes):
    return classes[np.argmax(proba, axis=1)]


class DaskKNeighborsClassifier:
    """k-NN classifier over a sharded index (fit / predict on dask arrays).

    Same parameters and answers as :class:`fastnn.KNeighborsClassifier`
    (neighbours by (distance, index), class ties to the smallest label).
    ``predict`` returns a dask array for dask input, numpy for numpy input.
    """

    def __init__(self, n_neighbors=5, *, weights="uniform", metric="minkowski", p=2,
                 backend="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.p = p
        self.backend = backend

    def fit(self, X, y):
        from sklearn.preprocessing import LabelEncoder
        _, da = _require_dask()
        _check_weights(self.weights)
        y = np.asarray(y.compute() if isinstance(y, da.Array) else y)
        if y.ndim != 1 or len(y) != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X "
                             f"({X.shape[0]}), got shape {y.shape}")
        enc = LabelEncoder()
        self._y = enc.fit_transform(y)
        self.classes_ = enc.classes_
        self.index_ = ShardedIndex(X, metric=_resolve_metric(self.metric, self.p),
                                   backend=self.backend)
        self.n_features_in_ = self.index_.n_features
        return self

    def kneighbors(self, X, n_neighbors=None, return_distance=True, farthest=False):
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        return self.index_.kneighbors(X, k, return_distance, farthest)

    def predict_proba(self, X):
        _, da = _require_dask()
        k = check_k(self.n_neighbors, self.index_.n_samples)
        d, i = self.index_.kneighbors(X, k)
        args = (self._y, len(self.classes_), self.weights)
        if isinstance(d, da.Array):
            return da.map_blocks(vote_proba, d, i, *args, dtype=np.float64,
                                 chunks=(d.chunks[0], (len(self.classes_),)))
        return vote_proba(d, i, *args)

    def predict(self, X):
        _, da = _require_dask()
        proba = self.predict_proba(X)
        if isinstance(proba, da.Array):
            return proba.map_blocks(_argmax_labels, self.classes_,
                                    dtype=self.classes_.dtype, drop_axis=1)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y):
        _, da = _require_dask()
        p = self.predict(X)
        p = p.compute() if isinstance(p, da.Array) else p
        y = y.compute() if isinstance(y, da.Array) else y
        return float(np.mean(p == np.asarray(y)))
