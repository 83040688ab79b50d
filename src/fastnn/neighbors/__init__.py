"""Exact nearest-neighbour engine: an index built once, queried many times.

Semantics (``docs/architecture.md``): distances are exact (integers in
exact arithmetic, floats as a float64 sum of squared differences in one
fixed order, ``kernels.distances.sqdist_float``: the same bits in every
backend and on every CPU), neighbours are sorted by (distance, index) — for
``farthest=True`` by (-distance, index) — so results never depend on the
backend, the thread count or the chunk size. On integer data the
neighbours are sklearn's ``NearestNeighbors(algorithm='brute')``
neighbours, index for index, and the Euclidean distances are bit-identical.

Backends (``registry`` chooses; each is a module here)
-------------------------------------------------------
``'brute'`` (``brute``)
    BLAS float64 GEMM tiles, fused top-k in numba, exact re-rank.
``'pruned'`` (``pruned``)
    Exact search that skips candidates by the projection lower bound
    ``|q - x|^2 >= |P(q - x)|^2 + (|r_q| - |r_x|)^2`` (P: top principal
    directions of a sample of the index), first in the leading directions
    for every point (bfloat16 tiles filtered in L1 on AMX / AVX-512 BF16,
    else a float32 BLAS GEMM), then in all directions for the points left,
    then exactly; every stage with a proven rounding margin.
``'faiss'`` (``faiss_flat``)
    faiss ``knn`` (float32) for candidates, exact re-rank; queries whose
    candidates cannot be proven complete are redone exactly.
``'auto'``
    ``'pruned'`` where a few principal directions hold most of the index's
    variance (raw pixels, HOG features; k up to 256), else ``'faiss'`` (k up
    to 64); ``'brute'`` for farthest neighbours, indexes under 512 rows,
    under 16 features, larger k, and batches of fewer than 4 million
    query-row pairs while the pruned layout is not built yet (building it
    costs about as much as brute force on that many pairs; once it exists,
    small batches take it too).

k > 256 (up to a full ranking, k = n) takes ``large-k`` (in ``brute``):
GEMM distances to every row, a selection of the k-th, exact distances for
the rows that could reach it and a stable sort. 'manhattan' (``manhattan``)
and 'ip' (``inner_product``) have their own exact backends.
"""

from .index import NearestNeighborsIndex, kneighbors
from .pairwise import pairwise_distances, pairwise_distances_chunked
from .pruned.options import PrunedOptions
from .registry import SearchRequest
from .validation import BACKENDS, KERNELS, METRICS, check_data

__all__ = ["NearestNeighborsIndex", "kneighbors", "pairwise_distances",
           "pairwise_distances_chunked", "check_data", "METRICS", "BACKENDS", "KERNELS",
           "PrunedOptions", "SearchRequest"]
