"""Peak memory of large searches: 1,000,000 x 324 float32 index (HOG-sized
rows, 1.30 GB) and the real CIFAR-10 raw pixels (50,000 x 3,072 uint8),
10,000 queries, k=10. Runs in a fresh process and reports
peak RSS above the resident data (index + queries + libraries).

    pytest benchmarks/bench_memory.py --benchmark-only -p no:cacheprovider -s

Budget (search issue): index + queries + 512 MB.
"""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, time
import numpy as np

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
backend, data = sys.argv[1], sys.argv[2]
import fastnn
from fastnn import NearestNeighborsIndex
if data == "cifar-raw":
    from fastnn.datasets import default_cifar_path, load_cifar10
    ds = load_cifar10(default_cifar_path())
    X = ds.x_train.reshape(50000, -1)
    Q = ds.x_test.reshape(10000, -1)
    del ds
else:
    rng = np.random.default_rng(0)
    X = rng.random((1_000_000, 324), dtype=np.float32)
    Q = rng.random((10_000, 324), dtype=np.float32)
NearestNeighborsIndex(X[:5000], backend=backend).kneighbors(Q[:50], 10)   # JIT, libraries
base = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:     # reset the high-water mark
    f.write("5")
t = time.perf_counter()
idx = NearestNeighborsIndex(X, backend=backend)
d, i = idx.kneighbors(Q, 10)
dt = time.perf_counter() - t
print(json.dumps(dict(backend=backend, chosen=idx.stats_.get("backend"), seconds=dt,
                      base_bytes=base, peak_bytes=rss("VmHWM:"),
                      data_bytes=X.nbytes + Q.nbytes)))
"""


@pytest.mark.parametrize("backend,data", [("auto", "1m-x-324"), ("auto", "cifar-raw")])
def test_peak_memory(benchmark, backend, data, cifar):
    info = {}

    def run():
        out = subprocess.run([sys.executable, "-c", SCRIPT, backend, data], capture_output=True,
                             text=True, check=True)
        info.update(json.loads(out.stdout.strip().splitlines()[-1]))
    benchmark.pedantic(run, rounds=1)
    extra = info["peak_bytes"] - info["base_bytes"]
    benchmark.extra_info.update(info, extra_mb=extra / 2 ** 20)
    print(f"\n{data} {backend} ({info['chosen']}): {info['seconds']:.1f} s, peak RSS above "
          f"index+queries+libraries: {extra / 2 ** 20:.0f} MB")
