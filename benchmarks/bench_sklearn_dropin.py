"""fastnn's sklearn.neighbors drop-ins against scikit-learn itself, on
CIFAR-10 (50,000 training rows, 10,000 test queries), in one run.

    pytest benchmarks/bench_sklearn_dropin.py --benchmark-only -p no:cacheprovider \\
        --benchmark-group-by=group --benchmark-columns=min,max,rounds

Each row is ``fit`` + ``predict`` (or the search) of the same estimator with
the same parameters, imported from ``fastnn`` or from ``sklearn.neighbors``:

* ``knn5-hog``: KNeighborsClassifier(5) on HOG features (float32, 324);
* ``radius-hog``: RadiusNeighborsClassifier(r, outlier_label='most_frequent')
  on HOG, r = the median distance of 200 test queries to their 10th
  nearest training row (a median of 23 neighbours, a long tail);
* ``radius-raw``: NearestNeighbors(radius=r).radius_neighbors on raw pixels
  (uint8, 3,072), 1,000 queries, r chosen the same way;
* ``knn5-cosine-hog``: KNeighborsClassifier(5, metric='cosine') on HOG;
* ``knn5-chebyshev``: KNeighborsClassifier(5, metric='chebyshev') on HOG,
  10,000 rows and 2,000 queries (fastnn computes every distance);
* ``fallback-braycurtis``: the same with metric='braycurtis', which fastnn
  does not serve, so both run scikit-learn's code; the ratio is the
  drop-in's overhead.

Every side the minimum of the same 3 rounds after one untimed round (warm
numba cache and page faults paid on both sides). Threads: all cores (2
here) for fastnn's numba and BLAS and for scikit-learn's OpenMP and BLAS.
The group's ratio column compares the minimum times; ``extra_info`` holds
the share of predictions equal to scikit-learn's and which engine served
(``engine_``).
"""

import numpy as np
import pytest
import sklearn.neighbors as skn

import fastnn
from fastnn import hog

_ROUNDS = 3


def _radius(X, Q):
    d10 = fastnn.NearestNeighborsIndex(X).kneighbors(Q[:200], 10)[0][:, -1]
    return float(np.median(d10))


@pytest.fixture(scope="module")
def hog_data(cifar):
    X = hog(cifar.x_train, channel_axis=-1, dtype=np.float32)
    Q = hog(cifar.x_test, channel_axis=-1, dtype=np.float32)
    return X, cifar.y_train, Q, _radius(X, Q)


@pytest.fixture(scope="module")
def raw_data(cifar):
    X = cifar.x_train.reshape(len(cifar.x_train), -1)
    Q = cifar.x_test[:1000].reshape(1000, -1)
    return X, Q, _radius(X, Q)


_REFERENCE = {}


def _run(benchmark, group, library, make, fit_args, call):
    benchmark.group = group
    module = fastnn if library == "fastnn" else skn
    model = None

    def once():
        nonlocal model
        model = make(module).fit(*fit_args)
        return call(model)
    out = benchmark.pedantic(once, rounds=_ROUNDS, warmup_rounds=1)
    benchmark.extra_info["engine"] = getattr(model, "engine_", "sklearn")
    key = (group, library)
    _REFERENCE[key] = out
    other = _REFERENCE.get((group, "sklearn" if library == "fastnn" else "fastnn"))
    if other is not None and isinstance(out, np.ndarray) and out.dtype != object:
        benchmark.extra_info["equal_to_other_side"] = float(np.mean(out == other))


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
def test_knn5_hog(benchmark, hog_data, library):
    X, y, Q, _ = hog_data
    _run(benchmark, "knn5-hog", library, lambda m: m.KNeighborsClassifier(5), (X, y),
         lambda model: model.predict(Q))


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
def test_radius_classifier_hog(benchmark, hog_data, library):
    X, y, Q, r = hog_data
    _run(benchmark, "radius-hog", library,
         lambda m: m.RadiusNeighborsClassifier(r, outlier_label="most_frequent"), (X, y),
         lambda model: model.predict(Q))


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
def test_radius_neighbors_raw(benchmark, raw_data, library):
    X, Q, r = raw_data
    _run(benchmark, "radius-raw", library, lambda m: m.NearestNeighbors(radius=r), (X,),
         lambda model: np.array([len(a) for a in model.radius_neighbors(Q)[1]]))


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
def test_knn5_cosine_hog(benchmark, hog_data, library):
    X, y, Q, _ = hog_data
    _run(benchmark, "knn5-cosine-hog", library,
         lambda m: m.KNeighborsClassifier(5, metric="cosine"), (X, y),
         lambda model: model.predict(Q))


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
@pytest.mark.parametrize("metric", ["chebyshev", "braycurtis"])
def test_other_metrics(benchmark, hog_data, library, metric):
    X, y, Q, _ = hog_data
    group = "knn5-chebyshev" if metric == "chebyshev" else "fallback-braycurtis"
    _run(benchmark, group, library, lambda m: m.KNeighborsClassifier(5, metric=metric),
         (X[:10000], y[:10000]), lambda model: model.predict(Q[:2000]))
