"""``NearestNeighborsIndex``: validate once, ask the registry which backend
serves the call, shape the output. What the index computes from its data
lives in ``index.built`` (``state.BuiltState``); the backends build it on
first use."""

import numpy as np

from .._threads import limit_threads, resolve_n_jobs
from . import registry
from .pruned import backend as pruned_backend
from .pruned.options import PrunedOptions, radius_kernels, resolve_first_stage
from .registry import SearchRequest
from .state import BuiltState, uses_tiles
from .validation import check_backend, check_data, check_k, check_metric, \
    check_minkowski_p, check_n_components, kernel_families, row_sqnorms, u8_row_stats


# remove(): live rows sought beyond k in the first round (at most the
# removed count), and the growth of the list for queries that kept fewer
REMOVED_FIRST_EXTRA = 16
REMOVED_GROWTH = 4


class NearestNeighborsIndex:
    """Exact k-nearest-neighbour index over the rows of ``X``.

    Parameters
    ----------
    X : array_like (n_samples, n_features)
        Integer or float data; uint8 stays uint8 in memory.
    metric : {'euclidean', 'sqeuclidean', 'manhattan', 'ip', 'cosine', 'chebyshev', 'minkowski'}
        Aliases 'l2', 'cityblock' and 'l1' are accepted. 'manhattan' computes
        every exact distance (backend 'auto' or 'brute'). 'ip': maximum inner
        product, neighbours by decreasing product (the "distances" returned
        are the products), exact ('auto' or 'brute'). 'cosine': ``1 - q.x /
        (|q| |x|)`` as sklearn's ``cosine_distances``, exact, searched on
        the unit rows with ``backend`` (``fastnn.neighbors.cosine``).
        'chebyshev' and 'minkowski' (with ``p >= 1``) compute every exact
        distance the way sklearn's ``DistanceMetric`` does
        (``fastnn.neighbors.lp``; backend 'auto' or 'brute').
    backend : {'auto', 'brute', 'pruned', 'faiss'}
        See ``fastnn.neighbors`` (k > 256 always takes the large-k path;
        farthest neighbours are not pruned).
    n_components : int, optional
        Projection directions for the pruned backend (default: 128; 160 for
        more than 1,024 features; at most n_features).
    n_jobs : int or None
        Threads (None: all numba threads).
    random_state : int
        Seed of the sample the projection is fitted on (answers never depend
        on it, only the speed).
    kernels : {'auto', 'amx', 'avx512', 'avxvnni', 'avx2', 'portable'}
        The product kernels of the pruned search's first stage and of the
        exact uint8 products: Intel AMX tiles, AVX-512 (BF16 / VNNI),
        AVX-VNNI or AVX2 (an int8 first stage only: what CPUs without
        AVX-512 run), or the
        portable float32 BLAS + numba path (any CPU). 'auto' takes the first
        this CPU runs, in that order (``FASTNN_AMX=0`` / ``FASTNN_AVX512=0``
        / ``FASTNN_AVX2=0`` remove a family from the choice), except that
        the AVX-512 BF16 first stage runs only when named: the int8 first
        stage on AVX-512 VNNI is faster on Intel and AMD alike (see
        ``PrunedOptions.first_stage``). Answers are
        the same on every path; only the speed differs. Naming a family
        this CPU cannot run is a ValueError.
    p : float, optional
        Minkowski's power (``metric='minkowski'`` only; ``p >= 1``).
    pruned_options : PrunedOptions or dict, optional
        Tuning of the pruned search (tile widths, key capacity, ...; see
        ``fastnn.neighbors.PrunedOptions``). Never changes an answer.

    Attributes
    ----------
    stats_ : dict
        What the last search did: ``backend`` (the backend that served it),
        and for the pruned search its statistics (exact distance
        computations per query: mean, max; the first stage's kernels).
    built : BuiltState
        What the index computed from its data (projection, layout, norms).
    """

    # (class defaults: indexes pickled before remove() and p existed load without them)
    removed = None
    p = None

    def __init__(self, X, metric="euclidean", backend="auto", n_components=None,
                 n_jobs=None, random_state=0, kernels="auto", pruned_options=None, p=None):
        metric = metric if metric in ("ip", "cosine", "chebyshev", "minkowski") \
            else check_metric(metric)
        check_backend(backend, metric)
        self.p = check_minkowski_p(metric, p)
        self.metric = metric
        self.backend = backend
        self.kernels = kernels
        families = kernel_families(kernels)
        self.n_jobs = n_jobs
        self.n_components = check_n_components(n_components)
        self.random_state = random_state
        self.pruned_options = PrunedOptions.coerce(pruned_options)
        resolve_first_stage(self.pruned_options.first_stage, kernels, families)   # (raises early)
        info = {}
        try:
            n_check = resolve_n_jobs(n_jobs)
        except (TypeError, ValueError):
            n_check = 1         # (a bad n_jobs is reported where it is used)
        self.X, self.is_int = check_data(X, "X", info=info, n_threads=n_check)
        self.built = BuiltState(absmax=info.get("absmax"), tile_family=families[0],
                                int8_family=families[1])
        self.removed = None         # boolean mask of removed rows (remove()), or None
        self.stats_ = {}

    @property
    def n_samples(self):
        return self.X.shape[0]

    @property
    def n_features(self):
        return self.X.shape[1]

    def build_params(self):
        """The constructor's parameters (a sub-index is built with them)."""
        return dict(metric=self.metric, backend=self.backend, n_components=self.n_components,
                    n_jobs=self.n_jobs, random_state=self.random_state, kernels=self.kernels,
                    pruned_options=self.pruned_options, p=self.p)

    # -- what the backends ask for (built on first use) --------------------
    @property
    def xn(self):
        """Squared row norms of the index (float64, computed on first use)."""
        if self.built.row_sqnorms is None:
            n_threads = resolve_n_jobs(self.n_jobs)
            with limit_threads(n_threads):
                self.built.row_sqnorms = row_sqnorms(self.X, self.is_int, n_threads)
        return self.built.row_sqnorms

    def float32_copy(self):
        """The data as float32 (itself when float32; else one cached copy)."""
        if self.X.dtype == np.float32:
            return self.X
        if self.built.float32_copy is None:
            self.built.float32_copy = self.X.astype(np.float32)
        return self.built.float32_copy

    def u8_row_stats(self, n_threads):
        """Row sums and sums of squares of a uint8 index (int64, cached)."""
        if self.built.u8_row_stats is None:
            self.built.u8_row_stats = u8_row_stats(self.X, n_threads)[:2]
        return self.built.u8_row_stats

    def spectrum_residual(self, n_threads=1):
        """Shares of the index's variance outside 32 and 96 principal
        directions ('auto' chooses the pruned search by them; fitted on
        ``n_threads``)."""
        return pruned_backend.spectrum_residual(self, n_threads)

    # -- saving: a folder of .npy arrays and a JSON header (index_io) -------
    def save(self, path, overwrite=False):
        """Write the index (its data and what it built) to the folder
        ``path``: ``.npy`` arrays and a versioned JSON header with their
        checksums, no pickle (``fastnn.index_io``). The projection is built
        first, so a loaded index searches without rebuilding it."""
        from .. import index_io
        if self.metric in ("euclidean", "sqeuclidean") and self.n_samples >= 2:
            n_threads = resolve_n_jobs(self.n_jobs)
            with limit_threads(n_threads):
                pruned_backend.projection_and_layout(self, n_threads)
        return index_io.save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, mmap_mode="r", verify=True):
        """The index saved in ``path``. ``mmap_mode='r'`` (default) maps the
        arrays read-only (the OS shares their pages between processes),
        ``'c'`` copy-on-write, None reads them into memory; ``verify``
        checks every array against its checksum (``verify=False`` trusts
        the files). A foreign, altered or truncated file is a ValueError
        naming it."""
        from .. import index_io
        return index_io.load(cls, path, mmap_mode=mmap_mode, verify=verify)

    # -- pickling: arrays and parameters only, never faiss objects --------
    def __getstate__(self):
        state = self.__dict__.copy()
        built = BuiltState(**vars(self.built))
        # (rebuilt on first use)
        built.float32_copy = built.cosine_unit_index = built.ip_augmented = None
        state["built"] = built
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.adopt_kernel_families()

    def adopt_kernel_families(self):
        """After unpickling or loading: this process's kernel families; a
        projection built for another kind of path (tile kernels or the
        portable one; AMX and AVX-512 share their operands) or a layout for
        another first stage (``PrunedOptions.first_stage``) is rebuilt on
        first use."""
        try:
            families = kernel_families(self.kernels)
        except ValueError:          # (a family this CPU lacks: the automatic choice)
            families = kernel_families("auto")
        built = self.built
        try:
            first_stage, _ = resolve_first_stage(self.pruned_options.first_stage, self.kernels,
                                                 families)
        except ValueError:          # (as for kernels: the automatic choice)
            first_stage, _ = resolve_first_stage("auto", "auto", families)
        if (uses_tiles(families) != uses_tiles((built.tile_family, built.int8_family))
                or (built.layout is not None and built.layout.stage1_kind != first_stage)):
            built.projection = built.layout = None
        if (built.radius_bounds
                and built.radius_bounds.kernels != radius_kernels(
                    self.pruned_options.first_stage, self.kernels, families)):
            built.radius_bounds = None      # (its operand is another family's)
        built.tile_family, built.int8_family = families

    # ---------------------------------------------------------------------
    def kneighbors(self, Q, n_neighbors=1, return_distance=True, farthest=False,
                   backend=None, n_jobs=None, chunk_size=None, allowed=None):
        """The ``n_neighbors`` nearest (or farthest) index rows of each query.

        Returns ``(distances, indices)`` as sklearn's ``kneighbors`` (or only
        indices with ``return_distance=False``); distances are float64.

        ``allowed`` restricts the search to a subset of the index rows, the
        answer equal to a search of that subset (rows numbered as in the
        index, ties to the lower row): one set for every query (a boolean
        mask of ``n_samples`` values or an array of row ids) or one per
        query (a ``scipy.sparse`` matrix ``(n_queries, n_samples)`` whose
        stored non-zero entries are the allowed rows, or a sequence of
        ``n_queries`` id arrays). Each query needs at least ``n_neighbors``
        allowed rows (ValueError otherwise). Removed rows (``remove``) are
        never returned.
        """
        Q, q_int = self._check_queries(Q)
        if allowed is not None and self.metric in ("cosine", "chebyshev", "minkowski"):
            raise ValueError(f"allowed= is not supported with metric={self.metric!r} yet; "
                             "search an index of the allowed rows instead")
        if allowed is not None:
            from .filtering import kneighbors_allowed, without_removed
            return kneighbors_allowed(self, Q, q_int, n_neighbors,
                                      without_removed(allowed, self.removed, Q.shape[0]),
                                      return_distance, farthest, backend, n_jobs, chunk_size)
        if self.removed is not None:
            dist, ind = self._kneighbors_live(Q, q_int, n_neighbors, farthest, backend,
                                              n_jobs, chunk_size)
            return (dist, ind) if return_distance else ind
        dist, ind = self._kneighbors_all(Q, q_int, n_neighbors, farthest, backend, n_jobs,
                                         chunk_size)
        return (dist, ind) if return_distance else ind

    def _kneighbors_live(self, Q, q_int, n_neighbors, farthest, backend, n_jobs, chunk_size):
        """k-NN among the rows not removed: the index's own top ``kk`` lists
        (``kk`` from ``k`` plus the removed count, capped, growing by
        ``REMOVED_GROWTH`` for the queries that kept fewer than ``k`` live
        rows): ranks are those of the whole index, so the first ``k`` live
        rows of a list are the answer, ties to the lower row."""
        live = self.n_samples - int(self.removed.sum())
        k = check_k(n_neighbors, live)
        n = self.n_samples
        dist = np.empty((Q.shape[0], k), np.float64)
        ind = np.empty((Q.shape[0], k), np.int64)
        pending = np.arange(Q.shape[0])
        kk = min(n, k + min(n - live, max(k, REMOVED_FIRST_EXTRA)))
        while pending.size:
            d, i = self._kneighbors_all(Q[pending], q_int, kk, farthest, backend, n_jobs,
                                        chunk_size)
            keep = ~self.removed[i]
            done = keep.sum(axis=1) >= k
            # each done list's first k live entries, in rank order
            first_live = np.argsort(~keep[done], axis=1, kind="stable")[:, :k]
            dist[pending[done]] = np.take_along_axis(d[done], first_live, axis=1)
            ind[pending[done]] = np.take_along_axis(i[done], first_live, axis=1)
            pending = pending[~done]
            kk = min(n, kk * REMOVED_GROWTH)
        return dist, ind

    def _kneighbors_all(self, Q, q_int, n_neighbors, farthest, backend, n_jobs, chunk_size):
        """``(dist, ind)`` over every row (removed ones included)."""
        k = check_k(n_neighbors, self.n_samples)
        n_threads = resolve_n_jobs(self.n_jobs if n_jobs is None else n_jobs)
        # exact integer arithmetic only when both sides are integers
        request = SearchRequest(queries=Q, is_int=bool(self.is_int and q_int), k=k,
                                farthest=bool(farthest), n_threads=n_threads,
                                chunk_size=chunk_size)
        chosen = registry.choose(self, self.backend if backend is None else backend, request)
        dist = np.empty((Q.shape[0], k), np.float64)
        ind = np.empty((Q.shape[0], k), np.int64)
        if Q.shape[0]:
            with limit_threads(n_threads):
                chosen.search(self, request, dist, ind)
        if self.metric == "euclidean":
            np.sqrt(dist, out=dist)
        return dist, ind

    def remove(self, ids):
        """Remove the rows ``ids`` from every later search (k-NN, filtered,
        radius). Ids are stable: the other rows keep theirs, and ``add``
        numbers new rows after every row ever added (``n_samples``), as
        hnswlib's ``mark_deleted``. The data stays in the index until it is
        rebuilt (``compacted()``); a search needs ``n_neighbors`` live rows.
        Removing a row twice is harmless; ids outside ``[0, n_samples)`` are
        a ValueError."""
        from .filtering import checked_ids
        ids = checked_ids(ids, self.n_samples, "ids")
        removed = (np.zeros(self.n_samples, bool) if self.removed is None
                   else np.array(self.removed))       # (a loaded mask may be read-only)
        removed[ids] = True
        self.removed = removed if removed.any() else None
        self.stats_ = {}
        return self

    @property
    def n_live(self):
        """Rows not removed."""
        return self.n_samples - (0 if self.removed is None else int(self.removed.sum()))

    def compacted(self):
        """``(index, ids)``: a new index of the live rows only (built from
        scratch with this one's parameters) and, for each of its rows, its
        id here (``ids[j]``)."""
        ids = (np.arange(self.n_samples) if self.removed is None
               else np.flatnonzero(~self.removed))
        return NearestNeighborsIndex(np.asarray(self.X)[ids], **self.build_params()), ids

    def _check_queries(self, Q):
        Q, q_int = check_data(Q, "query", allow_empty=True)
        if Q.shape[1] != self.n_features:
            raise ValueError(f"query has {Q.shape[1]} features, but the index has "
                             f"{self.n_features} features")
        return Q, q_int

    def radius_neighbors(self, Q, radius, return_distance=True, sort_results=False,
                         n_jobs=None):
        """Every index row within ``radius`` of each query (``distance <=
        radius``, exact; ``fastnn.neighbors.radius``): object arrays of one
        array per query, as sklearn's ``radius_neighbors`` (rows in index
        order, or by (distance, row) with ``sort_results``). Euclidean,
        squared Euclidean, Manhattan and cosine metrics."""
        from .radius import radius_neighbors
        Q, q_int = self._check_queries(Q)
        n_threads = resolve_n_jobs(self.n_jobs if n_jobs is None else n_jobs)
        with limit_threads(n_threads):
            dist, ind = radius_neighbors(self, Q, bool(self.is_int and q_int), radius,
                                         sort_results, n_threads)
        if self.removed is not None:
            for t in range(len(ind)):
                keep = ~self.removed[ind[t]]
                dist[t], ind[t] = dist[t][keep], ind[t][keep]
        return (dist, ind) if return_distance else ind

    def add(self, X_new):
        """Append the rows ``X_new`` (their ids follow the index's: ``n_samples``,
        ``n_samples + 1``, ...), without refitting the projection.

        Searches afterwards answer exactly as an index built on all rows at
        once (the bounds of the new rows are proven like the others'; the
        projection, its centre and scale and the cluster centroids are
        kept, so a large added share of rows unlike the first ones prunes
        less well: rebuild then). The data must keep the index's dtype
        (values that need another one are a ValueError)."""
        info = {}
        X_new, _ = check_data(X_new, "X_new", allow_empty=True, info=info)
        if X_new.shape[1] != self.n_features:
            raise ValueError(f"X_new has {X_new.shape[1]} features, but the index has "
                             f"{self.n_features} features")
        if X_new.shape[0] == 0:
            return self
        if X_new.dtype != self.X.dtype:
            cast = X_new.astype(self.X.dtype)
            if not np.array_equal(cast, X_new):
                raise ValueError(f"X_new ({X_new.dtype}) holds values the index's dtype "
                                 f"{self.X.dtype} cannot represent; build a new index")
            X_new = cast
        n_threads = resolve_n_jobs(self.n_jobs)
        with limit_threads(n_threads):
            pruned_backend.add_rows(self, X_new, n_threads)
        self.X = np.concatenate([np.asarray(self.X), X_new])
        if self.removed is not None:
            self.removed = np.concatenate([self.removed, np.zeros(X_new.shape[0], bool)])
        if self.built.absmax is not None:
            self.built.absmax = max(self.built.absmax, info.get("absmax", 0.0))
        self.built.forget_rows()
        self.stats_ = {}
        return self


def kneighbors(X, Y, n_neighbors=1, *, metric="euclidean", return_distance=True,
               farthest=False, backend="auto", n_jobs=None, chunk_size=None, kernels="auto"):
    """For each row of ``X``, its ``n_neighbors`` nearest (or farthest) rows of ``Y``.

    Equivalent to ``NearestNeighbors(algorithm='brute').fit(Y).kneighbors(X)``
    with ties broken by the lower index. Returns ``(distances, indices)``.
    """
    index = NearestNeighborsIndex(Y, metric=metric, backend=backend, n_jobs=n_jobs,
                                  kernels=kernels)
    return index.kneighbors(X, n_neighbors, return_distance=return_distance,
                            farthest=farthest, chunk_size=chunk_size)
