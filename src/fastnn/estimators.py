"""scikit-learn estimators on top of fastnn's engine.

Thin classes: validate, keep arrays, call :mod:`fastnn.feature` and
:mod:`fastnn.neighbors`. Pickled state holds arrays and parameters only.
"""

import numbers

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .feature import BLOCK_NORMS, hog, hog_output_shape
from .neighbors import NearestNeighborsIndex
from .neighbors.topk import exclude_self
from .neighbors.validation import check_metric

__all__ = ["NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor",
           "KNeighborsTransformer", "RadiusNeighborsRegressor", "HOGTransformer", "HOGKNN"]


def _effective_p(p, metric_params):
    """sklearn's rule: ``metric_params['p']`` overrides ``p`` (with its
    warning); any other metric parameter is refused, never ignored."""
    if metric_params is None:
        return p
    if not isinstance(metric_params, dict):
        raise TypeError(f"metric_params must be a dict or None, got {metric_params!r}")
    other = sorted(set(metric_params) - {"p"})
    if other:
        raise ValueError(f"metric_params {other} are not supported by fastnn (its metrics "
                         "take no parameters besides minkowski's p); use "
                         "sklearn.neighbors for weighted or parametrised metrics")
    if "p" in metric_params:
        import warnings
        if p is not None:
            warnings.warn("Parameter p is found in metric_params. The corresponding parameter "
                          "from __init__ is ignored.", SyntaxWarning, stacklevel=3)
        return metric_params["p"]
    return p


def _resolve_metric(metric, p):
    if metric == "minkowski":
        if p == 2:
            return "euclidean"
        if p == 1:
            return "manhattan"
        raise ValueError(f"metric='minkowski' is supported with p=1 or p=2 only, got p={p}")
    return check_metric(metric)      # the engine's names and aliases


def _check_weights(weights):
    if weights in (None, "uniform", "distance") or callable(weights):
        return weights
    raise ValueError(f"weights not recognized: should be 'uniform', 'distance', or a "
                     f"callable function, got {weights!r}")


def _weights_from_distances(dist, weights):
    """sklearn's neighbour weights (zero distances take all the weight); a
    callable that gives some row no weight at all is sklearn's ValueError."""
    if weights in (None, "uniform"):
        return None
    if weights == "distance":
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        inf_mask = np.isinf(w)
        inf_row = np.any(inf_mask, axis=1)
        w[inf_row] = inf_mask[inf_row]
        return w
    w = weights(dist)
    if not np.all(np.any(np.asarray(w) != 0, axis=1)):
        raise ValueError("All neighbors of some sample is getting zero weights. Please "
                         "modify 'weights' to avoid this case if you are using a "
                         "user-defined function.")
    return w


def vote_proba(dist, ind, y_encoded, n_classes, weights):
    """Class probabilities from neighbours (sklearn's weighted vote,
    normalised); ``y_encoded`` holds the training labels as 0..n_classes-1."""
    w = _weights_from_distances(dist, weights)
    if w is None:
        w = np.ones_like(dist)
    labels = y_encoded[ind]
    proba = np.zeros((ind.shape[0], n_classes))
    rows = np.repeat(np.arange(ind.shape[0]), ind.shape[1])
    np.add.at(proba, (rows, labels.ravel()), w.ravel())
    normalizer = proba.sum(axis=1)[:, None]
    normalizer[normalizer == 0.0] = 1.0
    return proba / normalizer


def _check_n_neighbors(n_neighbors):
    """scikit-learn's checks (and messages) of an ``n_neighbors`` value; the
    bound by the number of fitted samples comes with the query."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral):
        raise TypeError(f"n_neighbors does not take {type(n_neighbors)} value, "
                        "enter integer value")
    if n_neighbors < 1:
        raise ValueError(f"Expected n_neighbors > 0. Got {n_neighbors}")


class _NeighborsBase(BaseEstimator):
    """Shared fit / kneighbors / kneighbors_graph."""

    def _validated(self, X, reset=True):
        """``X`` checked as sklearn does (dense; numeric dtypes kept, others
        as float64)."""
        X = validate_data(self, X, reset=reset, dtype=None, accept_sparse=False)
        return X if X.dtype.kind in "uif" else X.astype(np.float64)

    def _fit_index(self, X):
        if hasattr(self, "n_neighbors"):
            _check_n_neighbors(self.n_neighbors)
        metric = _resolve_metric(self.metric, _effective_p(self.p, self.metric_params))
        self._index = NearestNeighborsIndex(X, metric=metric,
                                            backend=getattr(self, "backend", "auto"),
                                            n_jobs=self.n_jobs)
        self.n_samples_fit_ = X.shape[0]
        self.effective_metric_ = metric
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True, farthest=False):
        """Neighbours of each query (sklearn semantics; ``X=None`` queries the
        training points, each excluding itself). ``farthest=True`` returns the
        most distant points instead."""
        check_is_fitted(self, "_index")
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        _check_n_neighbors(n_neighbors)
        query_is_train = X is None
        if query_is_train:
            X = self._index.X
            n_neighbors += 1
        else:
            X = self._validated(X, reset=False)
        if n_neighbors > self.n_samples_fit_:
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = "
                             f"{n_neighbors}, n_samples_fit = {self.n_samples_fit_}, "
                             f"n_samples = {X.shape[0]}")
        dist, ind = self._index.kneighbors(X, n_neighbors, farthest=farthest)
        if query_is_train:
            dist, ind = exclude_self(dist, ind, np.arange(ind.shape[0]), farthest)
        if return_distance:
            return dist, ind
        return ind

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """CSR graph of the k nearest neighbours (as sklearn)."""
        check_is_fitted(self, "_index")
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        if mode == "connectivity":
            ind = self.kneighbors(X, n_neighbors, return_distance=False)
            data = np.ones(ind.size)
        elif mode == "distance":
            dist, ind = self.kneighbors(X, n_neighbors, return_distance=True)
            data = dist.ravel()
        else:
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or '
                             f'"distance" but got "{mode}" instead')
        n_queries, k = ind.shape
        indptr = np.arange(0, n_queries * k + 1, k)
        return sparse.csr_matrix((data, ind.ravel(), indptr),
                                 shape=(n_queries, self.n_samples_fit_))


class _RadiusNeighborsMixin:
    """sklearn's ``radius_neighbors`` / ``radius_neighbors_graph`` on the
    engine's exact radius search."""

    def radius_neighbors(self, X=None, radius=None, return_distance=True, sort_results=False):
        """Rows within ``radius`` of each query (sklearn semantics; ``X=None``
        queries the training points, each excluding itself): object arrays
        of one array per query, rows in index order or, with
        ``sort_results``, by (distance, row)."""
        check_is_fitted(self, "_index")
        if sort_results and not return_distance:
            raise ValueError("return_distance must be True if sort_results is True.")
        radius = self.radius if radius is None else radius
        query_is_train = X is None
        if query_is_train:
            X = self._index.X
        else:
            X = self._validated(X, reset=False)
        dist, ind = self._index.radius_neighbors(X, radius, sort_results=sort_results)
        if query_is_train:
            for i in range(len(ind)):
                keep = ind[i] != i
                dist[i], ind[i] = dist[i][keep], ind[i][keep]
        return (dist, ind) if return_distance else ind

    def radius_neighbors_graph(self, X=None, radius=None, mode="connectivity",
                               sort_results=False):
        """CSR graph of the neighbours within ``radius`` (as sklearn)."""
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or '
                             f'"distance" but got "{mode}" instead')
        dist, ind = self.radius_neighbors(X, radius, return_distance=True,
                                          sort_results=sort_results)
        counts = np.array([len(a) for a in ind], dtype=np.int64)
        indptr = np.concatenate(([0], np.cumsum(counts)))
        cols = np.concatenate(list(ind)) if len(ind) else np.zeros(0, np.int64)
        data = (np.concatenate(list(dist)) if mode == "distance" and len(dist)
                else np.ones(cols.size))
        return sparse.csr_matrix((data, cols, indptr), shape=(len(ind), self.n_samples_fit_))


class NearestNeighbors(_RadiusNeighborsMixin, _NeighborsBase):
    """Unsupervised neighbour search, a drop-in for
    ``sklearn.neighbors.NearestNeighbors`` on the exact engine.

    ``kneighbors`` / ``kneighbors_graph`` as the classifier's;
    ``radius_neighbors`` / ``radius_neighbors_graph`` return every training
    row with ``distance <= radius`` (exact: on integer data the rows
    sklearn returns, row for row; ``fastnn.neighbors.radius``). Parameters
    as sklearn's (``algorithm`` and ``leaf_size`` are accepted and unused:
    the search is always exact); metrics: 'minkowski' with p = 1 or 2,
    'euclidean', 'sqeuclidean', 'manhattan' and their aliases; anything
    else is a ValueError, never a silently different metric.
    """

    def __init__(self, *, n_neighbors=5, radius=1.0, algorithm="auto", leaf_size=30,
                 metric="minkowski", p=2, metric_params=None, n_jobs=None, backend="auto"):
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.metric = metric
        self.p = p
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.backend = backend

    def fit(self, X, y=None):
        X = self._validated(X)
        return self._fit_index(X)


class _KNeighborsVote(_NeighborsBase):
    """The parameters the k-NN classifier and regressor share (sklearn's)."""

    def __init__(self, n_neighbors=5, *, weights="uniform", algorithm="auto", leaf_size=30,
                 p=2, metric="minkowski", metric_params=None, n_jobs=None, backend="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.p = p
        self.metric = metric
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.backend = backend


class KNeighborsClassifier(ClassifierMixin, _KNeighborsVote):
    """k-nearest-neighbours vote, a drop-in for ``sklearn.neighbors.KNeighborsClassifier``.

    Parameters
    ----------
    n_neighbors : int, default=5
    weights : {'uniform', 'distance'} or callable, default='uniform'
    algorithm, leaf_size : ignored (accepted for compatibility); the search is
        always exact.
    p : int, default=2
        1 (Manhattan) or 2 (Euclidean).
    metric : {'minkowski', 'euclidean', 'sqeuclidean', 'manhattan'}, default='minkowski'
        'l2', 'cityblock' and 'l1' are accepted too. Manhattan computes every
        exact distance (no pruned or faiss search for it).
    metric_params : dict or None
        Only ``{'p': 1}`` or ``{'p': 2}`` (which override ``p``, as in sklearn,
        with sklearn's warning); any other key is a ValueError, never ignored.
    n_jobs : int, default=None
    backend : {'auto', 'brute', 'pruned', 'faiss'}, default='auto'
        fastnn's search backend; answers never depend on it.

    Notes
    -----
    Neighbours are sorted by (distance, index) and class ties go to the
    smallest label, so predictions equal sklearn's on integer data.
    """

    def fit(self, X, y):
        """Store the training data and labels."""
        _check_weights(self.weights)
        X, y = validate_data(self, X, y, dtype=None, accept_sparse=False, multi_output=False)
        if X.dtype.kind not in "uif":
            X = X.astype(np.float64)
        check_classification_targets(y)
        enc = LabelEncoder()
        self._y = enc.fit_transform(y)
        self.classes_ = enc.classes_
        self.outputs_2d_ = False
        return self._fit_index(X)

    def predict_proba(self, X):
        """Class probabilities (neighbour weights per class, normalised)."""
        check_is_fitted(self, "_index")
        weights = _check_weights(self.weights)
        if X is None:
            dist, ind = self.kneighbors(None)
        else:
            dist, ind = self.kneighbors(X)
        return vote_proba(dist, ind, self._y, len(self.classes_), weights)

    def predict(self, X):
        """Majority (or weighted) vote; ties go to the smallest class label."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class KNeighborsRegressor(RegressorMixin, _KNeighborsVote):
    """k-nearest-neighbours regression, a drop-in for
    ``sklearn.neighbors.KNeighborsRegressor``: the (weighted) mean of the
    neighbours' targets, one or several outputs.

    Parameters as :class:`KNeighborsClassifier` (``weights`` 'uniform',
    'distance' or a callable; ``metric`` euclidean / sqeuclidean / manhattan
    or minkowski with p = 1, 2; ``backend``: fastnn's search backend).
    Neighbours are exact and sorted by (distance, index), so predictions
    equal sklearn's wherever no distance tie straddles the k-th neighbour.
    """

    def fit(self, X, y):
        """Store the training data and targets."""
        _check_weights(self.weights)
        X, y = validate_data(self, X, y, dtype=None, accept_sparse=False, multi_output=True,
                             y_numeric=True)
        if X.dtype.kind not in "uif":
            X = X.astype(np.float64)
        self._y = np.asarray(y)
        return self._fit_index(X)

    def predict(self, X):
        """The mean of the neighbours' targets (weighted by ``weights``), as
        sklearn computes it."""
        check_is_fitted(self, "_index")
        weights = _check_weights(self.weights)
        dist, ind = self.kneighbors(X)
        w = _weights_from_distances(dist, weights)
        y = self._y.reshape(-1, 1) if self._y.ndim == 1 else self._y
        if w is None:
            pred = np.mean(y[ind], axis=1)
        else:
            pred = np.empty((dist.shape[0], y.shape[1]), np.float64)
            denom = np.sum(w, axis=1)
            for j in range(y.shape[1]):
                pred[:, j] = np.sum(y[ind, j] * w, axis=1) / denom
        return pred.ravel() if self._y.ndim == 1 else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.multi_output = True
        return tags


class KNeighborsTransformer(TransformerMixin, _NeighborsBase):
    """Sparse k-NN graph, sklearn's ``KNeighborsTransformer`` contract.

    ``transform`` returns a CSR graph with ``n_neighbors`` neighbours per row
    (``n_neighbors + 1`` in ``mode='distance'``, as sklearn), to plug a fast
    exact k-NN into sklearn pipelines (``metric='precomputed'`` estimators).
    """

    def __init__(self, *, mode="distance", n_neighbors=5, algorithm="auto", leaf_size=30,
                 metric="minkowski", p=2, metric_params=None, n_jobs=None, backend="auto"):
        self.mode = mode
        self.n_neighbors = n_neighbors
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.metric = metric
        self.p = p
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.backend = backend

    def fit(self, X, y=None):
        X = self._validated(X)
        if self.mode not in ("distance", "connectivity"):
            raise ValueError(f'Unsupported mode, must be one of "connectivity", or '
                             f'"distance" but got "{self.mode}" instead')
        self._fit_index(X)
        self._n_features_out = self.n_samples_fit_
        return self

    def transform(self, X):
        check_is_fitted(self, "_index")
        add_one = self.mode == "distance"
        return self.kneighbors_graph(X, mode=self.mode, n_neighbors=self.n_neighbors + add_one)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "_index")
        return np.asarray([f"{type(self).__name__.lower()}{i}"
                           for i in range(self.n_samples_fit_)], dtype=object)


class RadiusNeighborsRegressor(_RadiusNeighborsMixin, RegressorMixin, _NeighborsBase):
    """Regression on the neighbours within ``radius``, a drop-in for
    ``sklearn.neighbors.RadiusNeighborsRegressor``: the (weighted) mean of
    their targets, one or several outputs; a query with no neighbour
    predicts NaN with sklearn's warning. Neighbours are exact (on integer
    data the rows sklearn finds), so predictions equal sklearn's. Metrics
    and ``metric_params`` as :class:`NearestNeighbors`."""

    def __init__(self, radius=1.0, *, weights="uniform", algorithm="auto", leaf_size=30, p=2,
                 metric="minkowski", metric_params=None, n_jobs=None):
        self.radius = radius
        self.weights = weights
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.p = p
        self.metric = metric
        self.metric_params = metric_params
        self.n_jobs = n_jobs

    def fit(self, X, y):
        """Store the training data and targets."""
        _check_weights(self.weights)
        X, y = validate_data(self, X, y, dtype=None, accept_sparse=False, multi_output=True,
                             y_numeric=True)
        if X.dtype.kind not in "uif":
            X = X.astype(np.float64)
        self._y = np.asarray(y)
        return self._fit_index(X)

    def predict(self, X):
        """The mean (``weights``: weighted) of the targets of the neighbours
        within ``radius``, computed as sklearn computes it; NaN, with
        sklearn's warning, where a query has none."""
        check_is_fitted(self, "_index")
        weights = _check_weights(self.weights)
        dist, ind = self.radius_neighbors(X)
        y = self._y.reshape(-1, 1) if self._y.ndim == 1 else self._y
        empty = np.full_like(y[0], np.nan, dtype=np.float64)
        w = _radius_weights(dist, weights)
        pred = np.array([
            (np.mean(y[rows, :], axis=0) if w is None
             else np.average(y[rows, :], axis=0, weights=w[i])) if len(rows) else empty
            for i, rows in enumerate(ind)])
        if np.any(np.isnan(pred)):
            import warnings
            warnings.warn("One or more samples have no neighbors within specified radius; "
                          "predicting NaN.")
        return pred.ravel() if self._y.ndim == 1 else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _radius_weights(dist, weights):
    """sklearn's weights of radius neighbours (one array per query; zero
    distances take all the weight), or None for uniform weights."""
    if weights in (None, "uniform"):
        return None
    if weights == "distance":
        out = np.empty(len(dist), dtype=object)
        for i, d in enumerate(dist):
            if 0.0 in d:
                out[i] = (d == 0.0).astype(np.float64)
            else:
                with np.errstate(divide="ignore"):
                    out[i] = 1.0 / d
        return out
    return weights(dist)


def _image_batch(X, image_shape, channel_axis):
    """Images from an image stack or from flat rows (with ``image_shape``)."""
    X = np.asarray(X) if not hasattr(X, "to_numpy") else X.to_numpy()
    if X.ndim == 2 and image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(f"image_shape={shape} does not match rows of {X.shape[1]} values")
        X = X.reshape((X.shape[0],) + shape)
    elif X.ndim == 2:
        raise ValueError("HOG needs images: pass an image stack (n, rows, cols[, channels]) "
                         "or set image_shape for flat rows")
    if X.ndim not in (3, 4):
        raise ValueError(f"HOG needs an image stack (n, rows, cols[, channels]) or flat rows "
                         f"with image_shape; got an array of ndim={X.ndim}, shape {X.shape}")
    if X.shape[0] == 0:
        # (as sklearn's estimators: the function fastnn.hog returns an empty
        # result for an empty batch, an estimator refuses one)
        raise ValueError(f"Found an empty image stack: 0 sample(s) (shape={X.shape}) while a "
                         "minimum of 1 is required.")
    if channel_axis == "auto":
        channel_axis = -1 if X.ndim == 4 else None
    return X, channel_axis


class HOGTransformer(TransformerMixin, BaseEstimator):
    """HOG features as a stateless sklearn transformer (skimage's parameters).

    Parameters
    ----------
    orientations, pixels_per_cell, cells_per_block, block_norm, transform_sqrt :
        as :func:`skimage.feature.hog`.
    channel_axis : int, None or 'auto', default='auto'
        'auto': the last axis of 4-D stacks is colour, 3-D stacks are grey.
    image_shape : tuple, optional
        Shape of one image when rows arrive flat (Pipelines, DataFrames).
    dtype : float32 or float64 or None
        Output dtype (None: skimage's rule).
    n_jobs : int or None
    """

    def __init__(self, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3),
                 block_norm="L2-Hys", transform_sqrt=False, channel_axis="auto",
                 image_shape=None, dtype=None, n_jobs=None):
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.transform_sqrt = transform_sqrt
        self.channel_axis = channel_axis
        self.image_shape = image_shape
        self.dtype = dtype
        self.n_jobs = n_jobs

    def _hog(self, Xb, channel_axis):
        """HOG of an image stack from ``_image_batch``."""
        return hog(Xb, self.orientations, self.pixels_per_cell, self.cells_per_block,
                   self.block_norm, transform_sqrt=self.transform_sqrt,
                   channel_axis=channel_axis, dtype=self.dtype, n_jobs=self.n_jobs)

    def fit(self, X, y=None):
        """Check the parameters on X (nothing is learned)."""
        if self.block_norm not in BLOCK_NORMS:
            raise ValueError(f"block_norm={self.block_norm!r} is not one of {BLOCK_NORMS}")
        Xb, channel_axis = _image_batch(X, self.image_shape, self.channel_axis)
        spatial = Xb.shape[1:3] if channel_axis is None or channel_axis in (-1, 2) else None
        if spatial is not None:
            self._n_out = int(np.prod(hog_output_shape(spatial, self.orientations,
                                                       self.pixels_per_cell,
                                                       self.cells_per_block)))
        else:
            self._n_out = self._hog(Xb[:1], channel_axis).shape[1]
        self.n_features_in_ = int(np.prod(Xb.shape[1:]))
        self._image_shape_in = tuple(Xb.shape[1:])
        return self

    def transform(self, X):
        check_is_fitted(self, "_n_out")
        Xb, channel_axis = _image_batch(X, self.image_shape, self.channel_axis)
        if tuple(Xb.shape[1:]) != self._image_shape_in:
            raise ValueError(f"images of shape {tuple(Xb.shape[1:])}, but this transformer "
                             f"was fitted on images of shape {self._image_shape_in}")
        return self._hog(Xb, channel_axis)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "_n_out")
        return np.asarray([f"hog{i}" for i in range(self._n_out)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


class HOGKNN(ClassifierMixin, BaseEstimator):
    """HOG features + exact k-NN vote in one classifier.

    ``HOGKNN(n_neighbors=1).fit(x_train, y_train).predict(x_test)`` equals
    skimage's ``hog`` per image followed by sklearn's
    ``KNeighborsClassifier(n_neighbors=1)``. Defaults follow sklearn
    (``n_neighbors=5``) and skimage (HOG parameters), with colour detected
    from 4-D stacks (``channel_axis='auto'``).
    """

    def __init__(self, n_neighbors=5, *, weights="uniform", orientations=9,
                 pixels_per_cell=(8, 8), cells_per_block=(3, 3), block_norm="L2-Hys",
                 transform_sqrt=False, channel_axis="auto", image_shape=None,
                 hog_dtype=np.float32, n_jobs=None, backend="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.transform_sqrt = transform_sqrt
        self.channel_axis = channel_axis
        self.image_shape = image_shape
        self.hog_dtype = hog_dtype
        self.n_jobs = n_jobs
        self.backend = backend

    def _transformer(self):
        return HOGTransformer(self.orientations, self.pixels_per_cell, self.cells_per_block,
                              self.block_norm, self.transform_sqrt, self.channel_axis,
                              self.image_shape, self.hog_dtype, self.n_jobs)

    def fit(self, X, y):
        self.hog_ = self._transformer().fit(X)
        feats = self.hog_.transform(X)
        self.knn_ = KNeighborsClassifier(self.n_neighbors, weights=self.weights,
                                         n_jobs=self.n_jobs, backend=self.backend)
        self.knn_.fit(feats, y)
        self.classes_ = self.knn_.classes_
        return self

    def transform(self, X):
        """HOG features of ``X`` (images of the fitted shape)."""
        check_is_fitted(self, "hog_")
        return self.hog_.transform(X)

    def predict_proba(self, X):
        check_is_fitted(self, "knn_")
        return self.knn_.predict_proba(self.transform(X))

    def predict(self, X):
        check_is_fitted(self, "knn_")
        return self.knn_.predict(self.transform(X))

    def kneighbors(self, X, n_neighbors=None, return_distance=True, farthest=False):
        check_is_fitted(self, "knn_")
        return self.knn_.kneighbors(self.transform(X), n_neighbors, return_distance, farthest)
