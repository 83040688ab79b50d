"""Shared fixtures of the benchmarks, and a fair faiss.

faiss-cpu's wheels bundle an OpenBLAS (0.3.15 in faiss-cpu 1.15) that does
not know recent CPUs: on an Intel Emerald Rapids (family 6 model 207) it
falls back to its ``Prescott`` (SSE3) kernels, and ``IndexFlatL2`` runs
3.5x slower than with its SkylakeX ones (CIFAR HOG 10,000 x 50,000 k=1:
5.7 s against 1.6 s). A comparison against that would flatter fastnn, so
before faiss is first imported this file asks a subprocess which core
faiss's OpenBLAS picks and, where it picked a pre-AVX2 one on a CPU with
AVX-512 (AVX2), sets ``OPENBLAS_CORETYPE=SkylakeX`` (``Haswell``) for this
process, unless the variable is already set. ``faiss_blas_core()`` says
what faiss uses; the search benchmark prints it. (fastnn's own faiss
backend warns about the same fallback: ``FaissBlasWarning``.)
"""

import os
import subprocess
import sys

import numpy as np
import pytest

_CORE_PROBE = r"""
import os
import faiss
from fastnn.kernels import cpu
libs = cpu.faiss_openblas_libraries(os.path.dirname(faiss.__file__))
if libs:
    print(cpu.openblas_core(libs[0]))
"""


def faiss_blas_core():
    """The OpenBLAS core faiss's bundled BLAS would run on in a new process
    with this environment (None: faiss absent or not linked to a bundled
    OpenBLAS)."""
    try:
        out = subprocess.run([sys.executable, "-c", _CORE_PROBE], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _fair_faiss_blas():
    if "OPENBLAS_CORETYPE" in os.environ or "faiss" in sys.modules:
        return
    from fastnn.kernels import cpu
    better = cpu.fitting_openblas_core()
    if better and faiss_blas_core() in cpu.PRE_AVX2_OPENBLAS_CORES:
        os.environ["OPENBLAS_CORETYPE"] = better


_fair_faiss_blas()


@pytest.fixture(scope="session")
def faiss_blas():
    """``'<core>'`` of faiss's OpenBLAS in this run, and whether this file
    chose it (for the benchmarks' headers)."""
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    return f"{faiss_blas_core()} (OPENBLAS_CORETYPE={chosen})" if chosen else faiss_blas_core()



@pytest.fixture(scope="session")
def cifar():
    from fastnn.datasets import default_cifar_path, load_cifar10
    path = default_cifar_path()
    if path is None:
        pytest.skip("real CIFAR-10 archive not found in ../shared/data")
    return load_cifar10(path)


@pytest.fixture(scope="session")
def cifar_shaped():
    return np.random.default_rng(0).integers(0, 256, (60000, 32, 32, 3), dtype=np.uint8)
