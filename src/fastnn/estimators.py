"""scikit-learn estimators on top of fastnn's engine.

The seven ``sklearn.neighbors`` estimators are subclasses of scikit-learn's
own (fit, validation, attributes and every path fastnn does not serve are
sklearn's code), with their searches on :mod:`fastnn.neighbors`; the HOG
estimators call :mod:`fastnn.feature`. Pickled state holds arrays and
parameters only.
"""

import numbers
from collections import Counter

import numpy as np
from scipy import sparse
import sklearn.neighbors as _sk
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .feature import BLOCK_NORMS, hog, hog_output_shape
from .neighbors import NearestNeighborsIndex
from .neighbors.topk import exclude_self
from .neighbors.validation import check_metric

__all__ = ["NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor",
           "KNeighborsTransformer", "RadiusNeighborsClassifier", "RadiusNeighborsRegressor",
           "RadiusNeighborsTransformer", "HOGTransformer", "HOGKNN"]


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
    return _weighted_votes(ind, _weights_from_distances(dist, weights), y_encoded, n_classes)


def _weighted_votes(ind, w, y_encoded, n_classes):
    """Each query's neighbour weights (``w``; None: one each) summed per
    class in neighbour order, as sklearn sums them, then normalised."""
    if w is None:
        w = np.ones(ind.shape)
    labels = y_encoded[ind]
    proba = np.zeros((ind.shape[0], n_classes))
    rows = np.repeat(np.arange(ind.shape[0]), ind.shape[1])
    np.add.at(proba, (rows, labels.ravel()), np.asarray(w, dtype=np.float64).ravel())
    normalizer = proba.sum(axis=1)[:, None]
    normalizer[normalizer == 0.0] = 1.0
    return proba / normalizer


# -- scikit-learn's neighbours estimators, served by fastnn's engine --------
#
# Each class below *is* its scikit-learn class (a subclass): sklearn's fit
# validates and stores exactly what it always does (parameters, attributes,
# errors, classes_, outputs, trees), and fastnn then builds its exact index
# where it can serve the fit. Queries go to fastnn's engine where it serves
# them and to scikit-learn's own code everywhere else, so every input
# sklearn accepts gets sklearn's answer or fastnn's exact equivalent.

# sklearn's metric names fastnn's engine serves (with its aliases)
ACCELERATED_METRICS = ("euclidean", "l2", "sqeuclidean", "manhattan", "cityblock", "l1",
                       "cosine", "chebyshev", "infinity", "minkowski")

_BACKENDS = ("auto", "brute", "pruned", "faiss")

# fits served per engine in this process ('fastnn', 'sklearn'): diagnostics,
# e.g. how many fits of a test suite reached fastnn's engine
ENGINE_FITS = Counter()


def _engine_metric(estimator):
    """``((metric, p), '')``: the engine's metric (and Minkowski's p) for a
    fitted sklearn neighbours estimator, or ``(None, reason)`` where
    scikit-learn's own algorithm serves it."""
    if estimator._fit_method != "brute":
        return None, (f"scikit-learn chose algorithm={estimator._fit_method!r} (a tree: few "
                      "features or an explicit algorithm); fastnn serves brute-force fits")
    if sparse.issparse(estimator._fit_X):
        return None, "sparse data"
    if estimator.metric == "precomputed":
        return None, "metric='precomputed'"
    metric = estimator.effective_metric_
    if callable(metric) or metric not in ACCELERATED_METRICS:
        return None, f"metric {metric!r} (fastnn serves {', '.join(ACCELERATED_METRICS)})"
    params = dict(estimator.effective_metric_params_)
    p = None
    if metric == "minkowski":
        # (sklearn left p here because it is not 1, 2 or inf)
        p = params.pop("p", 2)
        if params.pop("w", None) is not None:
            return None, "weighted minkowski (metric_params w)"
        if not 1 <= p < np.inf:
            return None, f"minkowski with p={p} (fastnn serves p >= 1)"
        p = float(p)
    if params:
        return None, f"metric_params {estimator.effective_metric_params_!r}"
    if estimator._fit_X.dtype.kind not in "uif":
        return None, f"data of dtype {estimator._fit_X.dtype}"
    if metric == "infinity":
        metric = "chebyshev"
    if metric not in ("cosine", "chebyshev", "minkowski"):
        metric = check_metric(metric)
    return (metric, p), ""


class _FastEngineMixin:
    """fastnn's engine inside a scikit-learn neighbours estimator.

    After sklearn's ``_fit``, the fit is served by fastnn when sklearn chose
    brute force on dense numeric data with a metric fastnn computes
    (``ACCELERATED_METRICS``, Minkowski p = 1 or 2); then ``kneighbors``,
    ``radius_neighbors`` and everything built on them (graphs, predictions)
    run on fastnn's exact search. Otherwise scikit-learn's own code serves,
    unchanged. ``engine_`` says which ('fastnn' or 'sklearn') and
    ``engine_reason_`` why sklearn serves a fit.
    """

    def _fit(self, X, y=None):
        super()._fit(X, y)
        self._fastnn_index = None
        served, reason = _engine_metric(self)
        if served is not None:
            metric, p = served
            self._fastnn_index = NearestNeighborsIndex(self._fit_X, metric=metric, p=p,
                                                       backend=self.backend,
                                                       n_jobs=self.n_jobs)
        elif self.backend != "auto":
            raise ValueError(f"backend={self.backend!r} asks for fastnn's engine, but "
                             f"scikit-learn serves this fit ({reason}); use backend='auto'")
        self.engine_ = "fastnn" if served is not None else "sklearn"
        self.engine_reason_ = reason
        ENGINE_FITS[self.engine_] += 1
        return self

    def _fastnn_serves(self, X):
        """Whether fastnn's engine answers queries ``X`` (None: the training
        points): a fit it serves, and dense queries."""
        check_is_fitted(self)
        return self._fastnn_index is not None and not sparse.issparse(X)

    def _fastnn_queries(self, X):
        """Queries validated as sklearn validates them."""
        return validate_data(self, X, accept_sparse="csr", reset=False, order="C")


class _FastKNeighborsMixin(_FastEngineMixin):
    """``kneighbors`` (and so ``kneighbors_graph``) on fastnn's exact search."""

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True, farthest=False):
        """scikit-learn's ``kneighbors`` (same arguments, answers and errors),
        exact on fastnn's engine where it serves the fit: neighbours sorted
        by (distance, index), ties to the lower index. ``farthest=True``
        (fastnn only) returns the most distant points instead."""
        if not self._fastnn_serves(X):
            if farthest:
                raise ValueError("farthest=True needs fastnn's engine, and scikit-learn "
                                 f"serves this model ({self.engine_reason_})")
            return super().kneighbors(X, n_neighbors, return_distance)
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        elif n_neighbors <= 0:
            raise ValueError("Expected n_neighbors > 0. Got %d" % n_neighbors)
        elif not isinstance(n_neighbors, numbers.Integral):
            raise TypeError(f"n_neighbors does not take {type(n_neighbors)} value, "
                            "enter integer value")
        query_is_train = X is None
        if query_is_train:
            X = self._fit_X
            n_neighbors += 1
        else:
            X = self._fastnn_queries(X)
        if n_neighbors > self.n_samples_fit_:
            if query_is_train:
                n_neighbors -= 1
            inequality = "n_neighbors < n_samples_fit" if query_is_train else \
                "n_neighbors <= n_samples_fit"
            raise ValueError(f"Expected {inequality}, but n_neighbors = {n_neighbors}, "
                             f"n_samples_fit = {self.n_samples_fit_}, n_samples = {X.shape[0]}")
        dist, ind = self._fastnn_index.kneighbors(X, n_neighbors, farthest=farthest)
        if query_is_train:
            dist, ind = exclude_self(dist, ind, np.arange(ind.shape[0]), farthest)
        return (dist, ind) if return_distance else ind


def _engine_takes_radius(r):
    """Whether fastnn's radius search takes ``r`` (a finite real >= 0);
    sklearn answers (or refuses) the others."""
    return (not isinstance(r, bool) and isinstance(r, numbers.Real) and bool(np.isfinite(r))
            and r >= 0)


class _FastRadiusMixin(_FastEngineMixin):
    """``radius_neighbors`` on fastnn's exact radius search (a scalar,
    finite radius; ``distance <= radius`` decided as sklearn decides it)."""

    def radius_neighbors(self, X=None, radius=None, return_distance=True, sort_results=False):
        """scikit-learn's ``radius_neighbors`` (same arguments, answers and
        errors), exact on fastnn's engine where it serves the fit: rows in
        index order, or by (distance, index) with ``sort_results``."""
        r = self.radius if radius is None else radius
        if not (self._fastnn_serves(X) and _engine_takes_radius(r)):
            return super().radius_neighbors(X, radius, return_distance, sort_results)
        if sort_results and not return_distance:
            raise ValueError("return_distance must be True if sort_results is True.")
        query_is_train = X is None
        X = self._fit_X if query_is_train else self._fastnn_queries(X)
        dist, ind = self._fastnn_index.radius_neighbors(X, float(r), sort_results=sort_results)
        if query_is_train:
            for i in range(len(ind)):
                keep = ind[i] != i
                dist[i], ind[i] = dist[i][keep], ind[i][keep]
        return (dist, ind) if return_distance else ind


def _with_backend(sk_class):
    """sklearn's parameter constraints plus fastnn's ``backend``."""
    from sklearn.utils._param_validation import StrOptions
    return {**sk_class._parameter_constraints, "backend": [StrOptions(set(_BACKENDS))]}


def _per_output(estimator):
    """(labels as 0..n-1 per output column, classes per output)."""
    if estimator.outputs_2d_:
        return estimator._y, estimator.classes_
    return estimator._y.reshape(-1, 1), [estimator.classes_]


_BACKEND_DOC = """backend : {'auto', 'brute', 'pruned', 'faiss'}, default='auto'
        fastnn's search backend where fastnn serves the fit (answers never
        depend on it); another value than 'auto' on a fit scikit-learn
        serves is a ValueError."""

_ENGINE_DOC = """Which engine serves: fastnn's exact search where scikit-learn would use
    brute force on dense numeric data with a metric fastnn computes
    (euclidean, sqeuclidean, manhattan and their aliases; minkowski with
    p = 1 or 2); scikit-learn's own code everywhere else (trees, sparse,
    precomputed, other metrics, metric_params), with sklearn's answers.
    The fitted ``engine_`` ('fastnn' or 'sklearn') says which, and
    ``engine_reason_`` why sklearn serves. On the fastnn path neighbours
    are exact and sorted by (distance, index): on integer data the
    distances equal sklearn's bit for bit, and ties go to the lower index
    (sklearn's brute force fixes no order among equal distances)."""


class NearestNeighbors(_FastKNeighborsMixin, _FastRadiusMixin, _sk.NearestNeighbors):
    __doc__ = f"""Unsupervised neighbour search: ``sklearn.neighbors.NearestNeighbors``
    on fastnn's exact engine.

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.NearestNeighbors)

    def __init__(self, *, n_neighbors=5, radius=1.0, algorithm="auto", leaf_size=30,
                 metric="minkowski", p=2, metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(n_neighbors=n_neighbors, radius=radius, algorithm=algorithm,
                         leaf_size=leaf_size, metric=metric, p=p, metric_params=metric_params,
                         n_jobs=n_jobs)
        self.backend = backend


class KNeighborsClassifier(_FastKNeighborsMixin, _sk.KNeighborsClassifier):
    __doc__ = f"""k-nearest-neighbours vote: ``sklearn.neighbors.KNeighborsClassifier``
    on fastnn's exact engine.

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC} Class ties go to the smallest label, as in sklearn.
    """
    _parameter_constraints = _with_backend(_sk.KNeighborsClassifier)

    def __init__(self, n_neighbors=5, *, weights="uniform", algorithm="auto", leaf_size=30,
                 p=2, metric="minkowski", metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(n_neighbors, weights=weights, algorithm=algorithm,
                         leaf_size=leaf_size, p=p, metric=metric, metric_params=metric_params,
                         n_jobs=n_jobs)
        self.backend = backend

    def _neighbour_weights(self, X):
        """(neighbour indices, their weights or None), sklearn's rules."""
        if self.weights == "uniform":
            return self.kneighbors(X, return_distance=False), None
        dist, ind = self.kneighbors(X)
        return ind, _weights_from_distances(dist, self.weights)

    def predict_proba(self, X):
        """Class probabilities (neighbour weights per class, normalised), as
        sklearn computes them."""
        if not self._fastnn_serves(X):
            return super().predict_proba(X)
        ind, w = self._neighbour_weights(X)
        labels, classes = _per_output(self)
        proba = [_weighted_votes(ind, w, labels[:, j], len(c)) for j, c in enumerate(classes)]
        return proba if self.outputs_2d_ else proba[0]

    def predict(self, X):
        """Majority (or weighted) vote; ties go to the smallest class label."""
        if not self._fastnn_serves(X):
            return super().predict(X)
        from sklearn.utils.extmath import weighted_mode
        ind, w = self._neighbour_weights(X)
        labels, classes = _per_output(self)
        pred = np.empty((ind.shape[0], len(classes)), dtype=classes[0].dtype)
        for j, classes_j in enumerate(classes):
            if w is None:
                winner = np.argmax(_weighted_votes(ind, None, labels[:, j], len(classes_j)),
                                   axis=1)
            else:
                winner = weighted_mode(labels[ind, j], w, axis=1)[0].ravel().astype(np.intp)
            pred[:, j] = classes_j.take(winner)
        return pred if self.outputs_2d_ else pred.ravel()


class KNeighborsRegressor(_FastKNeighborsMixin, _sk.KNeighborsRegressor):
    __doc__ = f"""k-nearest-neighbours regression: ``sklearn.neighbors.KNeighborsRegressor``
    on fastnn's exact engine (the (weighted) mean of the neighbours'
    targets, computed by sklearn's own ``predict``).

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.KNeighborsRegressor)

    def __init__(self, n_neighbors=5, *, weights="uniform", algorithm="auto", leaf_size=30,
                 p=2, metric="minkowski", metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(n_neighbors, weights=weights, algorithm=algorithm,
                         leaf_size=leaf_size, p=p, metric=metric, metric_params=metric_params,
                         n_jobs=n_jobs)
        self.backend = backend


class KNeighborsTransformer(_FastKNeighborsMixin, _sk.KNeighborsTransformer):
    __doc__ = f"""Sparse k-NN graph: ``sklearn.neighbors.KNeighborsTransformer`` on
    fastnn's exact engine (to plug a fast exact k-NN into pipelines of
    ``metric='precomputed'`` estimators).

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.KNeighborsTransformer)

    def __init__(self, *, mode="distance", n_neighbors=5, algorithm="auto", leaf_size=30,
                 metric="minkowski", p=2, metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(mode=mode, n_neighbors=n_neighbors, algorithm=algorithm,
                         leaf_size=leaf_size, metric=metric, p=p, metric_params=metric_params,
                         n_jobs=n_jobs)
        self.backend = backend


class RadiusNeighborsTransformer(_FastRadiusMixin, _sk.RadiusNeighborsTransformer):
    __doc__ = f"""Sparse graph of the neighbours within ``radius``:
    ``sklearn.neighbors.RadiusNeighborsTransformer`` on fastnn's exact
    radius search.

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.RadiusNeighborsTransformer)

    def __init__(self, *, mode="distance", radius=1.0, algorithm="auto", leaf_size=30,
                 metric="minkowski", p=2, metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(mode=mode, radius=radius, algorithm=algorithm, leaf_size=leaf_size,
                         metric=metric, p=p, metric_params=metric_params, n_jobs=n_jobs)
        self.backend = backend


class RadiusNeighborsRegressor(_FastRadiusMixin, _sk.RadiusNeighborsRegressor):
    __doc__ = f"""Regression on the neighbours within ``radius``:
    ``sklearn.neighbors.RadiusNeighborsRegressor`` on fastnn's exact radius
    search (sklearn's own ``predict``: the (weighted) mean of their targets;
    NaN with sklearn's warning where a query has none).

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.RadiusNeighborsRegressor)

    def __init__(self, radius=1.0, *, weights="uniform", algorithm="auto", leaf_size=30, p=2,
                 metric="minkowski", metric_params=None, n_jobs=None, backend="auto"):
        super().__init__(radius, weights=weights, algorithm=algorithm, leaf_size=leaf_size,
                         p=p, metric=metric, metric_params=metric_params, n_jobs=n_jobs)
        self.backend = backend


class RadiusNeighborsClassifier(_FastRadiusMixin, _sk.RadiusNeighborsClassifier):
    __doc__ = f"""Vote of the neighbours within ``radius``:
    ``sklearn.neighbors.RadiusNeighborsClassifier`` on fastnn's exact radius
    search (``outlier_label`` for queries with no neighbour, as sklearn).

    Parameters as scikit-learn's, plus

    {_BACKEND_DOC}

    {_ENGINE_DOC}
    """
    _parameter_constraints = _with_backend(_sk.RadiusNeighborsClassifier)

    def __init__(self, radius=1.0, *, weights="uniform", algorithm="auto", leaf_size=30, p=2,
                 metric="minkowski", outlier_label=None, metric_params=None, n_jobs=None,
                 backend="auto"):
        super().__init__(radius, weights=weights, algorithm=algorithm, leaf_size=leaf_size,
                         p=p, metric=metric, outlier_label=outlier_label,
                         metric_params=metric_params, n_jobs=n_jobs)
        self.backend = backend

    def predict_proba(self, X):
        """Class probabilities of the neighbours within ``radius``
        (``outlier_label`` where there are none), as sklearn computes them."""
        if not (self._fastnn_serves(X) and _engine_takes_radius(self.radius)):
            return super().predict_proba(X)
        import warnings

        from sklearn.neighbors._base import _get_weights
        dist, ind = self.radius_neighbors(X)
        n_queries = len(ind)
        lengths = np.fromiter((len(rows) for rows in ind), np.int64, n_queries)
        outlier_mask = lengths == 0
        outliers = np.flatnonzero(outlier_mask)
        inliers = np.flatnonzero(~outlier_mask)
        if self.outlier_label_ is None and outliers.size > 0:
            raise ValueError("No neighbors found for test samples %r, you can try using "
                             "larger radius, giving a label for outliers, or considering "
                             "removing them from your dataset." % outliers)
        weights = _get_weights(dist, self.weights)
        # every query's neighbours at once: one bincount over (query, class)
        # bins adds each bin's weights in the order sklearn's per-query
        # bincount does, so the sums are the same
        rows = np.concatenate(list(ind)) if n_queries else np.zeros(0, np.int64)
        query_of_row = np.repeat(np.arange(n_queries), lengths)
        flat_weights = None
        if weights is not None:
            flat_weights = np.concatenate([np.asarray(weights[i], np.float64).reshape(-1)
                                           for i in inliers] or [np.zeros(0)])
        labels, classes = _per_output(self)
        probabilities = []
        for j, classes_j in enumerate(classes):
            n_classes = classes_j.size
            proba = np.bincount(query_of_row * n_classes + labels[rows, j], flat_weights,
                                minlength=n_queries * n_classes)
            proba = proba.astype(np.float64).reshape(n_queries, n_classes)
            if outliers.size > 0:
                label_index = np.flatnonzero(classes_j == self.outlier_label_[j])
                if label_index.size == 1:
                    proba[outliers, label_index[0]] = 1.0
                else:
                    warnings.warn("Outlier label {} is not in training classes. All class "
                                  "probabilities of outliers will be assigned with 0."
                                  "".format(self.outlier_label_[j]))
            normalizer = proba.sum(axis=1)[:, np.newaxis]
            normalizer[normalizer == 0.0] = 1.0
            probabilities.append(proba / normalizer)
        return probabilities if self.outputs_2d_ else probabilities[0]


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
