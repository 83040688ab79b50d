"""Thread settings: BLAS and numba thread counts hold inside the engine's
blocks and come back afterwards, also when the block raises."""

import numba
import pytest
from threadpoolctl import threadpool_info

from fastnn import _threads


def _blas_threads():
    """Thread counts of the BLAS the engine calls: numpy's. (An OpenMP-built
    BLAS, like the one in faiss's wheel, keeps a count per calling thread: a
    limit set in one thread does not reach a worker. Only faiss calls it.)"""
    info = [d for d in threadpool_info() if d["user_api"] == "blas"]
    own = [d for d in info if "numpy" in d["filepath"]]
    return [d["num_threads"] for d in (own or [d for d in info
                                               if d.get("threading_layer") != "openmp"])]


needs_blas = pytest.mark.skipif(not _blas_threads(), reason="numpy reports no BLAS library")


@needs_blas
def test_map_threads_holds_blas_to_one_and_restores():
    before = _blas_threads()
    seen = []
    _threads.map_threads(lambda part: seen.append(_blas_threads()), [1, 2, 3], 2)
    assert seen and all(all(n == 1 for n in s) for s in seen)
    assert _blas_threads() == before
    with pytest.raises(RuntimeError, match="boom"):
        _threads.map_threads(lambda part: (_ for _ in ()).throw(RuntimeError("boom")), [1], 1)
    assert _blas_threads() == before


@needs_blas
def test_limit_threads_restores_numba_and_blas():
    before, nb_before = _blas_threads(), numba.get_num_threads()
    with pytest.raises(KeyError):
        with _threads.limit_threads(1):
            assert numba.get_num_threads() == 1
            assert all(n == 1 for n in _blas_threads())
            raise KeyError
    assert _blas_threads() == before and numba.get_num_threads() == nb_before


def test_controller_is_cached_and_renewed_after_a_new_library(monkeypatch):
    if _threads._loaded_libraries() < 0:
        pytest.skip("this platform cannot list loaded libraries: no caching")
    with _threads._blas_limits(1):
        pass
    ctl = _threads._controller[0]
    with _threads._blas_limits(1):
        pass
    assert _threads._controller[0] is ctl           # no new library scan
    n = _threads._loaded_libraries()
    monkeypatch.setattr(_threads, "_loaded_libraries", lambda: n + 1)
    with _threads._blas_limits(1):
        pass
    assert _threads._controller[0] is not ctl       # a library came: scanned again
