"""Compile fastnn's kernels ahead of use: ``fastnn warmup`` or
``python -m fastnn.compile``.

numba compiles each kernel the first time it meets a new signature and keeps
the machine code in its on-disk cache (``cache=True``: ``__pycache__`` beside
the sources where that folder is writable, else numba's user-wide cache, or
``$NUMBA_CACHE_DIR``). A first run therefore pays seconds per kernel. Each
*job* below calls the public API once on small data of one kind, which
compiles exactly the specializations real data of that kind meet (the
engine normalises dtype and layout before its kernels). Jobs run in
separate processes, one per core, so a user or a Docker build pays the
compile once and on every core; the cache files of different kernels do not
collide.
"""

import argparse
import os
import re
import sys
import time

# job name -> (what it compiles, the dispatchers whose cache files say it ran)
JOBS = {
    "hog-uint8": "HOG of uint8 images (the table path)",
    "hog-float": "HOG of float images and transform_sqrt (the float path)",
    "search-uint8": "pruned exact k-NN of uint8 rows (raw pixels)",
    "search-float32": "pruned exact k-NN of float32 rows (HOGKNN's features, embeddings)",
    "search-float64": "pruned exact k-NN of float64 rows (hog's default output)",
    "brute-uint8": "brute-force / faiss re-rank of uint8 rows",
    "brute-float32": "brute-force / faiss re-rank of float32 rows (small batches of HOG features)",
    "brute-float64": "brute-force / faiss re-rank of float64 rows",
    "pairwise": "pairwise_distances (uint8, float32, float64; Manhattan)",
    "filters-ip": "per-query filtered search, inner product, cosine, chebyshev, minkowski",
    "radius": "radius search (projected bounds and every row; uint8, float32, float64)",
}

# earlier names of jobs that were split: a warm-up script keeps working
JOB_ALIASES = {"brute-float": ("brute-float32", "brute-float64")}

# the jobs ``fastnn report`` needs (checked, and compiled on a cold cache,
# before the report starts): the digits are small batches, which 'auto'
# serves by brute force (``registry.AUTO_MIN_PAIRS``)
REPORT_JOBS = ("hog-uint8", "brute-uint8", "brute-float32")   # longest first

# rows of the synthetic index: clustered pruned search needs at least four
# 2,048-point tiles (the clustering kernels compile too)
_INDEX_ROWS = 8192 + 64


def _rows(dtype, n, d, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    # low-rank rows: the 'auto' backend picks the pruned search for them
    base = rng.random((n, 8)) @ rng.random((8, d))
    if np.dtype(dtype) == np.uint8:
        return np.clip(base * (255 / base.max()), 0, 255).astype(np.uint8)
    return base.astype(dtype)


def run_job(name):
    """Run one job in this process; returns its wall time in seconds."""
    import warnings

    t = time.perf_counter()
    with warnings.catch_warnings():
        # (the faiss backend's warning about its BLAS concerns a user's
        # searches; a warm-up only compiles)
        warnings.filterwarnings("ignore", message="faiss's bundled OpenBLAS")
        _compile_job(name)
    return time.perf_counter() - t


def _compile_job(name):
    """The calls of the job ``name`` (``JOBS``)."""
    import numpy as np

    if name == "hog-uint8":
        from .feature import hog
        x = np.zeros((2, 32, 32, 3), np.uint8)
        hog(x, channel_axis=-1)
        hog(x[..., 0], visualize=True)
    elif name == "hog-float":
        from .feature import hog
        x = np.random.default_rng(0).random((2, 32, 32, 3))
        hog(x.astype(np.float32), channel_axis=-1)
        hog(x, channel_axis=-1, transform_sqrt=True)
    elif name.startswith("search-"):
        from .neighbors import NearestNeighborsIndex
        dtype = name.split("-")[1]
        X = _rows(dtype, _INDEX_ROWS, 64, 0)
        for k in (1, 5):
            NearestNeighborsIndex(X, backend="pruned").kneighbors(X[:40], k)
        # a small index is not clustered: its first tile goes through the
        # product scan (on AMX a clustered uint8 one is measured exactly)
        NearestNeighborsIndex(X[:1500], backend="pruned").kneighbors(X[:40], 1)
    elif name.startswith("brute-"):
        from .neighbors import NearestNeighborsIndex
        X = _rows(name.split("-")[1], 600, 32, 1)
        for backend in ("brute", "faiss"):
            NearestNeighborsIndex(X, backend=backend).kneighbors(X[:5], 3)
        NearestNeighborsIndex(X).kneighbors(X[:5], 3, farthest=True)
    elif name == "pairwise":
        from .neighbors import pairwise_distances
        for dtype in ("uint8", "float32", "float64"):
            X = _rows(dtype, 40, 16, 2)
            pairwise_distances(X)
            pairwise_distances(X, X[:7])
            pairwise_distances(X, X[:7], metric="manhattan")
    elif name == "filters-ip":
        from .neighbors import NearestNeighborsIndex
        from .neighbors.registry import AUTO_MIN_PAIRS
        for dtype in ("uint8", "float32"):
            X = _rows(dtype, 600, 32, 3)
            # per-query sets: a large one (the ranked lists), a small one
            # (every allowed distance)
            # (after a first search with backend='pruned' has built its layout,
            # 'auto' keeps the pruned search for small batches too)
            index = NearestNeighborsIndex(X)
            index.kneighbors(X[:4], 2, backend="pruned")
            for step in (3, 60):
                per_query = [np.arange(0, 600, step)] * 4
                index.kneighbors(X[:4], 2, allowed=per_query)
            # inner product: the Euclidean route (taken for batches of at
            # least AUTO_MIN_PAIRS query-row pairs) and the GEMM one
            many = np.tile(X, (AUTO_MIN_PAIRS // X.shape[0] // X.shape[0] + 1, 1))
            for backend, Q in (("auto", many), ("brute", X[:4])):
                NearestNeighborsIndex(X, metric="ip", backend=backend).kneighbors(Q, 2)
            NearestNeighborsIndex(X, metric="cosine").kneighbors(X[:4], 2)
            NearestNeighborsIndex(X, metric="chebyshev").kneighbors(X[:4], 2)
            NearestNeighborsIndex(X, metric="minkowski", p=3).radius_neighbors(X[:4], 1.0)
    elif name == "radius":
        from .neighbors import NearestNeighborsIndex
        for dtype in ("uint8", "float32", "float64"):
            X = _rows(dtype, 600, 32, 4)
            for backend in ("pruned", "brute"):
                NearestNeighborsIndex(X, backend=backend).radius_neighbors(X[:5], 1.0)
            NearestNeighborsIndex(X, metric="manhattan").radius_neighbors(X[:5], 1.0)
    else:
        raise ValueError(f"unknown warmup job {name!r}; expected one of {sorted(JOBS)}")


def _is_cached(dispatcher, dtype=None):
    """Whether numba's cache holds a fresh entry of ``dispatcher`` (one
    whose first array argument has ``dtype``, when given): its index file
    lists the saved signatures, and is empty when the sources changed."""
    cache = getattr(dispatcher, "_cache", None)
    try:
        overloads = cache._cache_file._load_index()
    except (AttributeError, OSError, EOFError, ValueError):   # (no cache or unreadable)
        return False
    for key in overloads:
        first_array = re.search(r"[Aa]rray\((\w+)", str(key[0]))
        if dtype is None or (first_array is not None and first_array.group(1) == dtype):
            return True
    return False


def cold_jobs(jobs):
    """The jobs of ``jobs`` whose main kernels are not in numba's cache yet."""
    from .kernels import distances as _kd
    from .kernels import pruned as _kp
    from .kernels import hog as _kh
    from .kernels import subset as _ks

    # job -> the kernels it compiles on every CPU path, each with the dtype
    # of its first array (None: any); the radius job's candidate distances
    # run on every path, its bound kernels differ per path (BLAS, bfloat16,
    # int8). The pruned search's kernels compile once for uint8, float32 and
    # float64 rows (byte views); its projection compiles per dtype
    marker = {"hog-uint8": [(_kh.hog_batch_lut, None)],
              "hog-float": [(_kh.hog_batch_polar, None)],
              "pairwise": [(_kd.finish_pairwise_parallel, None)],
              "filters-ip": [(_ks.topk_of_subsets, None)], "radius": [(_ks.pairs_within, None)]}
    for dtype in ("uint8", "float32", "float64"):
        marker[f"search-{dtype}"] = [(_kp.pruned_block, None),
                                     (_kd.centred_sqnorms_bound, dtype)]
        marker[f"brute-{dtype}"] = [(_kd.rerank_parallel, dtype)]
    unknown = [j for j in jobs if j not in marker]
    if unknown:
        raise ValueError(f"unknown warmup job {unknown[0]!r}; expected one of {sorted(JOBS)}")
    return [j for j in jobs if not all(_is_cached(*m) for m in marker[j])]


def checked_jobs(jobs):
    """``jobs`` with earlier names replaced (``JOB_ALIASES``); ValueError
    naming the first unknown one."""
    out = [part for j in jobs for part in JOB_ALIASES.get(j, (j,))]
    for j in out:
        if j not in JOBS:
            raise ValueError(f"unknown warmup job {j!r}; expected one of {sorted(JOBS)}")
    return out


def warmup(jobs=None, n_processes=None, progress=False, log=None):
    """Compile the kernels of ``jobs`` (default: all) in ``n_processes``
    worker processes (default: one per core, at most one per job).

    Returns ``{job: seconds}``. ``log`` (a callable) receives one line per
    finished job when given.
    """
    import concurrent.futures as cf
    import multiprocessing

    jobs = checked_jobs(JOBS if jobs is None else jobs)
    if not jobs:
        return {}
    n_processes = n_processes or os.cpu_count() or 1
    n_processes = max(1, min(int(n_processes), len(jobs)))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc="compiling kernels", unit="job", file=sys.stderr)
    times = {}
    try:
        if n_processes == 1:
            for j in jobs:
                times[j] = run_job(j)
                if bar is not None:
                    bar.update(1)
                if log:
                    log(f"{j}: {times[j]:.1f} s")
            return times
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(n_processes, mp_context=ctx) as pool:
            futures = {pool.submit(run_job, j): j for j in jobs}
            for f in cf.as_completed(futures):
                j = futures[f]
                times[j] = f.result()
                if bar is not None:
                    bar.update(1)
                if log:
                    log(f"{j}: {times[j]:.1f} s")
    finally:
        if bar is not None:
            bar.close()
    return times


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="fastnn warmup",
        description="Compile fastnn's kernels into numba's on-disk cache (once per "
                    "machine and install), one worker process per core.")
    p.add_argument("jobs", nargs="*", metavar="JOB",
                   help="jobs to run (default: all): " + ", ".join(JOBS))
    p.add_argument("-j", "--processes", type=int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-job lines")
    args = p.parse_args(argv)
    if args.processes is not None and args.processes < 1:
        p.error(f"--processes must be at least 1, got {args.processes}")
    t = time.perf_counter()
    try:
        warmup(args.jobs or None, args.processes, progress=not args.quiet and sys.stderr.isatty(),
               log=None if args.quiet else (lambda line: print(line, file=sys.stderr)))
    except ValueError as exc:
        print(f"fastnn: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"compiled in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
