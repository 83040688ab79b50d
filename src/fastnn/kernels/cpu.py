"""The CPU's features and fastnn's ``FASTNN_*`` switches, read in one place.

Nothing here changes state: each function reads (and caches) what the
operating system, LLVM or the environment says. The kernel modules ask it
which instructions they may use; which kernel family runs is decided in
``kernels/amx.py`` (``kernel_family``), which also runs the self-tests.

Switches (environment variables; ``0`` turns a feature off, anything else or
unset leaves it to the CPU):

* ``FASTNN_AMX``: Intel AMX tile kernels;
* ``FASTNN_AVX512``: the AVX-512 kernel family and the AVX-512 VNNI exact
  uint8 distance (with ``FASTNN_AMX=0`` too: what an AVX2-only CPU runs);
* ``FASTNN_AVX2``: the AVX2 and AVX-VNNI int8 first stage (with the two
  above: the portable path, as on an ARM CPU);
* ``FASTNN_VNNI``: the VNNI exact uint8 distance only.
"""

import ctypes
import glob
import os
from functools import lru_cache

SWITCHES = ("FASTNN_AMX", "FASTNN_AVX512", "FASTNN_AVX2", "FASTNN_VNNI")


def switch_on(name):
    """Whether the switch ``name`` (one of ``SWITCHES``) leaves its feature on."""
    if name not in SWITCHES:
        raise ValueError(f"unknown switch {name!r}; expected one of {SWITCHES}")
    return os.environ.get(name, "1") != "0"


@lru_cache(maxsize=None)
def linux_flags():
    """The CPU flags Linux reports (``/proc/cpuinfo``; an empty set elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=None)
def llvm_features():
    """The features of the CPU LLVM (and so numba) compiles for, as a dict
    ``{'avx512vnni': True, ...}`` (empty where llvmlite cannot tell)."""
    try:
        import llvmlite.binding as ll
        return dict(ll.get_host_cpu_features())
    except Exception:       # pragma: no cover
        return {}


def vnni_exact_distance():
    """Whether numba kernels may use AVX-512 VNNI for exact uint8 distances."""
    return (switch_on("FASTNN_VNNI") and switch_on("FASTNN_AVX512")
            and bool(llvm_features().get("avx512vnni", False)))


# OpenBLAS cores without AVX2 (OpenBLAS falls back to one of these on a CPU
# it does not know: faiss-cpu 1.15's bundled OpenBLAS 0.3.15 runs
# 'Prescott', SSE3, on an Intel Emerald Rapids)
PRE_AVX2_OPENBLAS_CORES = frozenset({
    "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Coppermine",
    "Northwood", "Banias", "Opteron", "Barcelona", "Bobcat", "Sandybridge", "Unknown"})


def openblas_core(library_path):
    """The core an OpenBLAS library runs on (``openblas_get_corename``;
    None where the library cannot say). Loading it picks the core: call
    this once the library is loaded anyway."""
    try:
        lib = ctypes.CDLL(library_path)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def faiss_openblas_libraries(faiss_dir):
    """The OpenBLAS libraries a faiss-cpu wheel bundles beside ``faiss_dir``
    (its package folder)."""
    return sorted(glob.glob(os.path.join(faiss_dir, os.pardir, "faiss_cpu.libs",
                                         "libopenblas*")))


def fitting_openblas_core():
    """The OpenBLAS core this CPU runs at full speed: ``'SkylakeX'`` with
    the AVX-512 F/BW/DQ/VL its kernels use, ``'Haswell'`` with AVX2 and
    FMA, else None (where ``OPENBLAS_CORETYPE`` should not be forced)."""
    flags = linux_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None
