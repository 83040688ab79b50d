"""fastnn: fast exact nearest neighbours and batch HOG for images.

Numba-parallel and FAISS-backed kernels behind scikit-learn-compatible
estimators, checked against scikit-image and scikit-learn.

The public names are imported on first use (module ``__getattr__``):
``import fastnn`` loads neither numba nor scikit-learn, ``fastnn.hog`` loads
numba only, the estimators load scikit-learn when first touched.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "hog": ".feature",
    "HOGKNN": ".estimators",
    "HOGTransformer": ".estimators",
    "KNeighborsClassifier": ".estimators",
    "NearestNeighbors": ".estimators",
    "RadiusNeighborsClassifier": ".estimators",
    "RadiusNeighborsRegressor": ".estimators",
    "RadiusNeighborsTransformer": ".estimators",
    "KNeighborsRegressor": ".estimators",
    "KNeighborsTransformer": ".estimators",
    "NearestNeighborsIndex": ".neighbors",
    "kneighbors": ".neighbors",
    "pairwise_distances": ".neighbors",
    "PrunedOptions": ".neighbors",
    "patch_sklearn": ".patching",
    "unpatch_sklearn": ".patching",
}

__all__ = ["__version__"] + list(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value          # (the next access is a plain lookup)
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
