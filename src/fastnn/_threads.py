"""Thread-count control shared by the engine functions.

* ``n_jobs`` follows scikit-learn/joblib: ``None`` means numba's default
  (all cores unless ``NUMBA_NUM_THREADS`` says otherwise), ``-1`` all cores,
  ``-2`` all but one, a positive number that many threads.
* numba's and BLAS' thread counts are restored in ``finally``.
* numba's default ``workqueue`` threading layer aborts the process when two
  Python threads enter a parallel region at once. Parallel kernels are
  therefore entered under a lock; a call that finds the lock taken runs the
  serial build of the same kernel instead (same arithmetic, same answer).
"""

import os
import threading
from contextlib import contextmanager

import numba

_parallel_lock = threading.Lock()
_controller = [None, -1]     # threadpoolctl controller, loaded-library count when made


def _loaded_libraries():
    """How many shared objects the process has loaded (``dl_iterate_phdr``,
    ~20-50 us), or -1 where that cannot be asked (no caching then)."""
    import ctypes

    try:
        it = ctypes.CDLL(None).dl_iterate_phdr
    except (OSError, AttributeError):
        return -1
    count = [0]

    def one(info, size, data):
        count[0] += 1
        return 0

    it(_PHDR_CALLBACK(one), None)
    return count[0]


def _phdr_callback_type():
    import ctypes
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


_PHDR_CALLBACK = _phdr_callback_type()


def _blas_limits(n_threads):
    """``threadpoolctl.threadpool_limits(n_threads, user_api='blas')`` on a
    cached controller: a new one inspects every loaded library (~1 ms, and
    a k-NN search sets limits several times). It is made again whenever the
    process has loaded another shared library since (it may be a BLAS)."""
    from threadpoolctl import ThreadpoolController

    n_lib = _loaded_libraries()
    ctl = _controller[0]
    if ctl is None or n_lib < 0 or _controller[1] != n_lib:
        ctl = ThreadpoolController()
        _controller[:] = [ctl, n_lib]
    return ctl.limit(limits=n_threads, user_api="blas")


def resolve_n_jobs(n_jobs):
    """Number of threads for ``n_jobs`` (sklearn conventions)."""
    max_threads = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return max_threads
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int,)) and not hasattr(n_jobs, "__index__"):
        raise TypeError(f"n_jobs must be an integer or None, got {n_jobs!r}")
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 has no meaning; use None, -1 or a positive integer")
    if n_jobs < 0:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, min(n_jobs, max_threads))


@contextmanager
def limit_threads(n_threads):
    """Run the block with ``n_threads`` numba threads and BLAS threads."""
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(n_threads)
        with _blas_limits(n_threads):
            yield n_threads
    finally:
        numba.set_num_threads(prev)


@contextmanager
def blas_threads(n_threads):
    """Run the block with ``n_threads`` BLAS threads (numba's unchanged):
    1 where Python threads (``run_in_parts``) each run their own small
    GEMMs."""
    with _blas_limits(n_threads):
        yield n_threads


def run_kernel(parallel_fn, serial_fn, n_threads, *args):
    """Call the parallel build when it is safe and useful, else the serial one."""
    if n_threads <= 1:
        return serial_fn(*args)
    if _parallel_lock.acquire(blocking=False):
        try:
            prev = numba.get_num_threads()
            numba.set_num_threads(n_threads)
            try:
                return parallel_fn(*args)
            finally:
                numba.set_num_threads(prev)
        finally:
            _parallel_lock.release()
    return serial_fn(*args)


def run_in_parts(fn, n, n_threads):
    """Call ``fn(lo, hi)`` on up to ``n_threads`` contiguous parts of
    ``range(n)``, one Python thread each (the calling thread takes the
    first part).

    For serial ``nogil`` kernels, which release the GIL: a batch spread over
    threads this way runs as fast as a ``parallel=True`` build of the same
    loop, and numba compiles one serial function instead of the serial
    function plus its parfor wrapper (seconds on a cold cache). ``fn`` must
    write disjoint outputs per part (then the answer does not depend on the
    thread count)."""
    n_parts = max(1, min(int(n_threads), n))
    bounds = [(p * n // n_parts, (p + 1) * n // n_parts) for p in range(n_parts)]
    if n_parts == 1:
        fn(*bounds[0])
        return
    errors = []

    def guarded(lo, hi):
        try:
            fn(lo, hi)
        except BaseException as exc:        # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=b) for b in bounds[1:]]
    for t in threads:
        t.start()
    try:
        guarded(*bounds[0])
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def map_threads(fn, items, n_threads):
    """Call ``fn(part)`` on ``n_threads`` round-robin parts of ``items``,
    one Python thread each, BLAS held to one thread per call.

    For loops that alternate BLAS calls with serial (``nogil``) numba
    kernels: BLAS' own threads keep spinning after a call and slow a numba
    parallel region that follows, one thread per part avoids both pools.
    ``fn`` must write disjoint outputs per item (then the answer does not
    depend on the thread count).
    """
    from concurrent.futures import ThreadPoolExecutor

    parts = [p for p in (items[i::n_threads] for i in range(max(1, n_threads))) if len(p)]
    with _blas_limits(1):
        if len(parts) <= 1:
            for p in parts:
                fn(p)
            return
        with ThreadPoolExecutor(len(parts)) as ex:
            for f in [ex.submit(fn, p) for p in parts]:
                f.result()
