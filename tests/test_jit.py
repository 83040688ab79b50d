"""Kernels compiled twice from one Python function (serial and parallel
builds, fastmath) keep separate numba caches: numba keys its cache entries by
signature only, so a shared cache would hand one build the other's machine
code."""

import os
import subprocess
import sys

import pytest

CODE = """
import sys
import numpy as np
from fastnn.kernels import distances as dk
A = np.ones((5, 3), np.int8)
c = np.zeros(3)
out = np.empty(5)
f = getattr(dk, sys.argv[1])
f(A, c, True, out)
print(len(f.stats.cache_hits), len(f.stats.cache_misses))
"""


@pytest.mark.parametrize("first, second", [
    ("centred_sqnorms_parallel", "centred_sqnorms_serial"),
    ("centred_sqnorms_serial", "centred_sqnorms_parallel"),
    ("centred_sqnorms_bound", "centred_sqnorms_serial"),
])
def test_twin_builds_do_not_share_the_cache(first, second, tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(name):
        out = subprocess.run([sys.executable, "-c", CODE, name], env=env, capture_output=True,
                             text=True, check=True)
        return tuple(int(v) for v in out.stdout.split()[-2:])

    assert run(first) == (0, 1)            # compiled and saved
    assert run(second) == (0, 1)           # not loaded from the first's entry
    assert run(second) == (1, 0)           # its own entry
