"""Which backend serves a search: a table of what each can do, asked in
order (as sklearn's ``_dispatcher``: ``is_usable_for``, then the caller
falls back).

Every backend is a class with the same small interface::

    name       the name in ``index.stats_['backend']``
    metrics    the metrics it serves
    farthest   whether it serves ``farthest=True``
    min_k, max_k   the k it serves
    is_usable_for(index, request) -> bool   (the table, plus data checks)
    search(index, request, dist, ind)       fills (n_queries, k) arrays with
                                            squared distances (or the
                                            metric's own values) and rows

``choose`` takes the user's ``backend`` ('auto' or a name) and returns the
first usable backend of: the wanted one, then 'inner-product' (metric 'ip'
only: the GEMM route), 'large-k', 'brute'.
"""

from typing import NamedTuple

from .validation import check_backend

# above this k sorted top lists cost O(k^2) per query: the large-k backend
# (GEMM rows, a selection and a stable sort) serves it
LARGE_K = 256
# 'auto' takes brute force below these sizes (building a projection costs
# more than it saves) and above this k (bounds prune little)
AUTO_MIN_ROWS = 512
AUTO_MIN_FEATURES = 16
AUTO_MAX_K = 64
# ... and for a batch of fewer (query, row) pairs than this while the pruned
# layout is not built yet: building it costs more than the batch saves
# (docs/benchmarks.md, "Small batches"), and brute force compiles in a
# fifth of the time (docs/coldstart.md)
AUTO_MIN_PAIRS = 4_000_000
# ... except that the pruned search keeps the data it prunes up to LARGE_K
# (CIFAR-10, 2,000 queries, k = 128 / 256, pruned against brute: raw pixels
# 0.46 / 0.94 s against 6.2 / 5.8 s, HOG 0.34 / 0.59 s against 2.1 / 2.4 s
# on AMX; 0.76 / 1.26 s and 0.53 / 0.89 s with FASTNN_AMX=0)
PRUNED_AUTO_MAX_K = LARGE_K
# 'auto' picks the pruned search when at most this variance fraction lies
# outside 32 principal directions (raw pixels: ~0.18) ...
PRUNE_MAX_RESIDUAL_32 = 0.25
# ... or at most this one outside 96 (HOG: ~0.06; random data: > 0.3), for
# data of at least 192 features
PRUNE_MAX_RESIDUAL_96 = 0.12
PRUNE_MIN_FEATURES_96 = 192

EUCLIDEAN = ("euclidean", "sqeuclidean")


class SearchRequest(NamedTuple):
    """One validated search: what every backend receives."""
    queries: object          # (n_queries, n_features) C-contiguous array
    is_int: bool             # exact integer arithmetic (index and queries integer)
    k: int
    farthest: bool
    n_threads: int
    chunk_size: object       # queries per chunk, or None (the backend's choice)


class Backend:
    """The interface (see the module); subclasses set the table."""
    name = None
    metrics = EUCLIDEAN
    farthest = True
    min_k = 1
    max_k = LARGE_K

    @classmethod
    def is_usable_for(cls, index, request):
        return (index.metric in cls.metrics and (cls.farthest or not request.farthest)
                and cls.min_k <= request.k <= cls.max_k)

    @staticmethod
    def search(index, request, dist, ind):    # pragma: no cover - interface
        raise NotImplementedError


_REGISTRY = {}
_LOADED = False


def register(backend_class):
    """Add a backend to the table (a class decorator)."""
    _REGISTRY[backend_class.name] = backend_class
    return backend_class


def registered():
    """The registered backends by name (a copy)."""
    _load()
    return dict(_REGISTRY)


def _load():
    """Import every backend module (each registers itself; once)."""
    global _LOADED
    if _LOADED:
        return
    from . import brute, cosine, faiss_flat, inner_product, lp, manhattan  # noqa: F401, PLC0415
    from .pruned import backend  # noqa: F401, PLC0415
    _LOADED = True


def small_batch(index, request):
    """Whether ``request`` is a batch too small to pay for building the
    pruned layout (none built yet; a request without queries asks about
    the data alone: never small)."""
    return (request.queries is not None and index.built.layout is None
            and request.queries.shape[0] * index.n_samples < AUTO_MIN_PAIRS)


def auto_choice(index, request):
    """The name 'auto' stands for: the pruned search where the data's
    principal directions make its bounds tight (most variance in 32
    directions, or nearly all in 96: HOG features), else faiss (or brute
    force without faiss); brute force for farthest neighbours, small
    indexes, few features, large k (above 64, or 256 for the pruned
    search) and small batches before the pruned layout exists (fewer than
    ``AUTO_MIN_PAIRS`` query-row pairs)."""
    if (request.farthest or index.n_samples < AUTO_MIN_ROWS
            or index.n_features < AUTO_MIN_FEATURES or request.k > PRUNED_AUTO_MAX_K
            or small_batch(index, request)):
        return "brute"
    residual_32, residual_96 = index.spectrum_residual(request.n_threads)
    if residual_32 <= PRUNE_MAX_RESIDUAL_32 or (
            index.n_features >= PRUNE_MIN_FEATURES_96
            and residual_96 <= PRUNE_MAX_RESIDUAL_96):
        return "pruned"
    if request.k > AUTO_MAX_K:
        return "brute"
    try:
        import faiss  # noqa: F401
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return "brute"
    return "faiss"


def choose(index, backend, request):
    """The backend class that serves ``request`` on ``index`` when the user
    asked for ``backend`` (validated here)."""
    _load()
    check_backend(backend, index.metric)
    if index.metric == "manhattan":
        wanted = "manhattan"          # (every exact distance: 'brute' is it)
    elif index.metric == "ip":
        # (the pruned route where the data let it prune, else the GEMM one)
        wanted = "inner-product-pruned" if backend == "auto" else "inner-product"
    elif index.metric == "cosine":
        wanted = "cosine"          # (the backend applies to its unit rows)
    elif index.metric in ("chebyshev", "minkowski"):
        wanted = "lp"
    elif backend == "auto":
        wanted = auto_choice(index, request)
    else:
        wanted = backend
    for name in (wanted, "inner-product", "large-k", "brute"):
        candidate = _REGISTRY[name]
        if candidate.is_usable_for(index, request):
            return candidate
    raise AssertionError(f"no backend serves {request.k=} {index.metric=}")  # pragma: no cover
