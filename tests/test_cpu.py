"""The CPU-features module: switches read from the environment, flags from
the OS and LLVM, no state changed."""

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


def test_auto_takes_the_avx512_bf16_first_stage_on_amd_only():
    """Without AMX (FASTNN_AMX=0), kernels='auto' runs the AVX-512 BF16 first
    stage where it pays (AMD) and the float32 BLAS one elsewhere, keeping the
    int8 products; kernels='avx512' forces it anywhere it runs. Answers are
    the same."""
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
    expected = "avx512-bf16" if cpu.vendor() == "AuthenticAMD" else "blas-float32"
    assert out == [expected, "avx512-bf16", "True"]
