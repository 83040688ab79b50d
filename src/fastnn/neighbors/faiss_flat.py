"""faiss ``knn`` (an exhaustive float32 search) for candidates, then the
exact re-rank: queries whose candidates cannot be proven complete are
scanned exactly.

faiss-cpu's wheels bundle an OpenBLAS that falls back to SSE3 kernels on
CPUs newer than it (Intel Sapphire / Emerald Rapids with faiss-cpu 1.15):
its searches then run ~3.5x slower. The first faiss search of a process
checks the core and warns (``FaissBlasWarning``) with the remedy."""

import os
import warnings

import numpy as np

from .brute import BruteBackend
from .registry import EUCLIDEAN, Backend, register
from .topk import RERANK_EXTRA, Candidates, rerank_exact
from .validation import UNIT_ROUNDOFF_F32, gemm_error_scale, row_sqnorms

# float32 squared norms beyond this could overflow in faiss's distances
# (an infinite distance proves nothing)
FLOAT32_SQNORM_LIMIT = 1e30


class FaissBlasWarning(UserWarning):
    """faiss's bundled OpenBLAS runs kernels far below this CPU's."""


_BLAS_CHECKED = []


def check_faiss_blas(faiss):
    """Warn once per process where faiss's bundled OpenBLAS runs a pre-AVX2
    core on a CPU with AVX2 or AVX-512."""
    if _BLAS_CHECKED:
        return
    _BLAS_CHECKED.append(True)
    from ..kernels import cpu
    better = cpu.fitting_openblas_core()
    for lib in cpu.faiss_openblas_libraries(os.path.dirname(faiss.__file__)):
        core = cpu.openblas_core(lib)
        if better and core in cpu.PRE_AVX2_OPENBLAS_CORES:
            warnings.warn(
                f"faiss's bundled OpenBLAS ({os.path.basename(lib)}) does not know this CPU "
                f"and runs its {core!r} kernels: faiss searches run several times slower "
                f"than they could. Start Python with OPENBLAS_CORETYPE={better} in the "
                f"environment (it must be set before faiss is imported).",
                FaissBlasWarning, stacklevel=5)


@register
class FaissBackend(Backend):
    name = "faiss"
    metrics = EUCLIDEAN
    farthest = False            # faiss has no farthest search for L2

    @staticmethod
    def search(index, request, dist, ind):
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
            raise ImportError("backend='faiss' needs faiss-cpu (pip install faiss-cpu)") from exc
        check_faiss_blas(faiss)
        Q, is_int, k, n_threads = request.queries, request.is_int, request.k, request.n_threads
        qn = row_sqnorms(Q, is_int, n_threads)
        if max(index.xn.max(), qn.max()) > FLOAT32_SQNORM_LIMIT:
            return BruteBackend.search(index, request, dist, ind)
        kk = min(index.n_samples, k + RERANK_EXTRA)
        # faiss.knn works on float32 arrays in place: float32 data is not
        # copied (an IndexFlatL2 would hold a second copy); other dtypes keep
        # one float32 copy (dropped from pickles)
        Xf = index.float32_copy()
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n_threads)
        try:
            D, I = faiss.knn(np.ascontiguousarray(Q, dtype=np.float32), Xf, kk)
        finally:
            faiss.omp_set_num_threads(previous_threads)
        # float32 distances: error bounded relative to the norms (float32
        # rounding of the data is exact for |ints| < 2**24, else bounded too)
        I = I.astype(np.int64)
        missing = (I < 0).any(axis=1)
        I[I < 0] = 0
        candidates = Candidates(D.astype(np.float64), I, np.full(Q.shape[0], kk, np.int64))
        err = gemm_error_scale(index.n_features, is_int, UNIT_ROUNDOFF_F32)
        full_scans = rerank_exact(index, Q, is_int, qn, candidates, 1.0, k, dist, ind,
                                  n_threads, error_scale=err, also_scan=missing)
        index.stats_ = {"backend": "faiss", "full_scans": full_scans}
