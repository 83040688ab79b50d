"""``patch_sklearn()`` / ``unpatch_sklearn()``: existing scikit-learn code
on fastnn's engine with one line.

``patch_sklearn()`` puts fastnn's seven neighbours estimators in place of
scikit-learn's in the ``sklearn.neighbors`` namespace, so code that imports
them afterwards (``from sklearn.neighbors import KNeighborsClassifier``)
gets fastnn's class: a subclass of scikit-learn's, served by fastnn's exact
search where it can be and by scikit-learn's own code elsewhere (see
``fastnn.estimators``). Names imported before the patch keep scikit-learn's
class, as with any module attribute.
"""

PATCHED_NAMES = ("NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor",
                 "KNeighborsTransformer", "RadiusNeighborsClassifier",
                 "RadiusNeighborsRegressor", "RadiusNeighborsTransformer")

_originals = {}


def patch_sklearn(names=PATCHED_NAMES):
    """Replace ``sklearn.neighbors.<name>`` by fastnn's class for each of
    ``names`` (default: all seven). Returns the names patched. Calling it
    twice is harmless; ``unpatch_sklearn()`` restores scikit-learn's."""
    import sklearn.neighbors as sk_neighbors

    from . import estimators
    unknown = sorted(set(names) - set(PATCHED_NAMES))
    if unknown:
        raise ValueError(f"fastnn does not provide {unknown}; it patches {PATCHED_NAMES}")
    for name in names:
        _originals.setdefault(name, getattr(estimators._sk, name))
        setattr(sk_neighbors, name, getattr(estimators, name))
    return tuple(names)


def unpatch_sklearn():
    """Put scikit-learn's own classes back in ``sklearn.neighbors``."""
    import sklearn.neighbors as sk_neighbors
    for name, original in _originals.items():
        setattr(sk_neighbors, name, original)
    _originals.clear()


def is_patched(name="KNeighborsClassifier"):
    """Whether ``sklearn.neighbors.<name>`` is fastnn's class now."""
    import sklearn.neighbors as sk_neighbors
    return getattr(sk_neighbors, name).__module__ == "fastnn.estimators"
