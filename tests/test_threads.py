"""Thread settings: BLAS and numba thread counts hold inside the engine's
blocks and come back afterwards, also when the block raises."""

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastnn import _threads


def _blas_threads():
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


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


def test_controller_is_cached_and_renewed_after_imports(monkeypatch):
    with _threads._blas_limits(1):
        pass
    ctl = _threads._controller[0]
    with _threads._blas_limits(1):
        pass
    assert _threads._controller[0] is ctl           # no new library scan
    import sys
    monkeypatch.setitem(sys.modules, "fastnn_test_fake_module", np)
    with _threads._blas_limits(1):
        pass
    assert _threads._controller[0] is not ctl       # a module came: scanned again
