"""The CPU-features module: switches read from the environment, flags from
the OS and LLVM, no state changed."""

import ast
import os
import subprocess
import sys

import pytest

from fastnn.kernels import cpu


def test_switches_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("FASTNN_AVX512", "0")
    assert not cpu.switch_on("FASTNN_AVX512")
    assert not cpu.vnni_exact_distance()
    monkeypatch.setenv("FASTNN_AVX512", "1")
    assert cpu.switch_on("FASTNN_AVX512")
    monkeypatch.delenv("FASTNN_AMX", raising=False)
    assert cpu.switch_on("FASTNN_AMX")
    with pytest.raises(ValueError, match="unknown switch"):
        cpu.switch_on("FASTNN_SSE")


def test_flags_agree_with_llvm():
    """Linux's flags and LLVM's features name the same AVX-512 units (where
    Linux reports flags at all)."""
    flags = cpu.linux_flags()
    feats = cpu.llvm_features()
    if not flags or not feats:
        pytest.skip("no /proc/cpuinfo flags or no llvmlite host features here")
    assert ("avx512f" in flags) == bool(feats.get("avx512f"))
    assert ("avx512_vnni" in flags) == bool(feats.get("avx512vnni"))
    assert ("avx2" in flags) == bool(feats.get("avx2"))


def test_avx512_switch_leaves_the_portable_path_in_a_fresh_process():
    code = ("from fastnn.kernels import amx, distances; "
            "print(amx.kernel_family('bf16'), amx.kernel_family('u8s8'), distances.VNNI)")
    env = dict(os.environ, FASTNN_AMX="0", FASTNN_AVX512="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "None", "False"]


def test_auto_takes_the_int8_first_stage_without_amx():
    """Without AMX (FASTNN_AMX=0), kernels='auto' runs the AVX-512 VNNI int8
    first stage on Intel and AMD alike (faster than bfloat16 on both);
    kernels='avx512' forces the AVX-512 BF16 one anywhere it runs. Answers
    are the same."""
    from fastnn.kernels import amx
    if not amx.available("avx512"):
        pytest.skip("no AVX-512 BF16 kernels on this CPU")
    code = ("import numpy as np; from fastnn import NearestNeighborsIndex; "
            "X = np.random.default_rng(0).integers(0, 9, (3000, 40)).astype(np.uint8); "
            "out = []\n"
            "for kern in ('auto', 'avx512'):\n"
            "    i = NearestNeighborsIndex(X, backend='pruned', kernels=kern)\n"
            "    out.append(i.kneighbors(X[:50], 3)[1]); print(i.stats_['first_stage'])\n"
            "print((out[0] == out[1]).all())")
    env = dict(os.environ, FASTNN_AMX="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    expected = "avx512-int8" if amx.available_int8("avx512") else "blas-float32"
    assert out == [expected, "avx512-bf16", "True"]


def test_switches_leave_avx2_then_portable():
    """With AMX and AVX-512 switched off, kernels='auto' runs what an
    AVX2-only CPU runs (the AVX-VNNI or AVX2 int8 first stage); FASTNN_AVX2=0 leaves the
    portable float32 BLAS one. Same answers."""
    from fastnn.kernels import amx
    if not amx.available_int8("avx2"):
        pytest.skip("no AVX2 on this CPU")
    code = ("import numpy as np; from fastnn import NearestNeighborsIndex; "
            "X = np.random.default_rng(0).random((3000, 40)).astype(np.float32); "
            "i = NearestNeighborsIndex(X, backend='pruned'); d, j = i.kneighbors(X[:50] + 0.01, 3); "
            "print(i.stats_['first_stage'], int(j.sum()))")
    out = []
    for avx2 in ("1", "0"):
        env = dict(os.environ, FASTNN_AMX="0", FASTNN_AVX512="0", FASTNN_AVX2=avx2)
        out.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True).stdout.split())
    assert [o[0] for o in out] == [("avxvnni-int8" if amx.available_int8("avxvnni")
                                    else "avx2-int8"), "blas-float32"]
    assert out[0][1] == out[1][1]


@pytest.mark.parametrize("forced", ["Prescott", "fitting"])
def test_faiss_backend_warns_when_its_openblas_runs_pre_avx2_kernels(forced):
    """faiss-cpu's bundled OpenBLAS falls back to SSE3 kernels on CPUs it does
    not know; the first faiss search of a process says so, with the remedy,
    and stays silent where the core fits the CPU (both forced through
    OPENBLAS_CORETYPE in a fresh process)."""
    faiss = pytest.importorskip("faiss")
    fitting = cpu.fitting_openblas_core()
    if fitting is None or not cpu.faiss_openblas_libraries(os.path.dirname(faiss.__file__)):
        pytest.skip("no AVX2 here, or faiss-cpu without a bundled OpenBLAS")
    code = ("import warnings, numpy as np; from fastnn import NearestNeighborsIndex\n"
            "from fastnn.neighbors.faiss_flat import FaissBlasWarning\n"
            "X = np.random.default_rng(0).standard_normal((600, 20)).astype(np.float32)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    for _ in range(2):\n"
            "        NearestNeighborsIndex(X, backend='faiss').kneighbors(X[:30], 3)\n"
            "print([str(x.message) for x in w if x.category is FaissBlasWarning])")
    core = "Prescott" if forced == "Prescott" else fitting
    env = dict(os.environ, OPENBLAS_CORETYPE=core)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    messages = ast.literal_eval(out)
    if forced == "Prescott":
        assert len(messages) == 1          # (once per process)
        assert "'Prescott'" in messages[0] and f"OPENBLAS_CORETYPE={fitting}" in messages[0]
    else:
        assert messages == []
