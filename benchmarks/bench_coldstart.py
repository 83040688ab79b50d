"""The first run after installing: fresh processes, cold and warm numba cache.

    pytest benchmarks/bench_coldstart.py --benchmark-only -p no:cacheprovider

Each round runs a new Python process. ``cold`` rounds get an empty
``NUMBA_CACHE_DIR`` (every kernel compiles, as on the first run after
installing), ``warm`` rounds the cache the cold rounds filled. The time is
the process's wall time as the parent sees it (interpreter start, imports,
compiles and the work), minimum of 3 rounds each; 2 threads (all cores of
this machine). The data (5,000 + 1,000 CIFAR-10 images, or random
CIFAR-shaped images where the archive is absent) are written to ``.npy``
files first, so no round decodes images.

Scenarios (the issue's): ``import`` (``import fastnn``), ``hog`` (its first
``hog`` of 5,000 images), ``script`` (hog of 5,000 images, raw-pixel and HOG
``kneighbors``, ``HOGKNN`` fit/predict), ``report`` (``fastnn report
--quiet`` on the digits).
"""

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

SCRIPTS = {
    "import": "import fastnn",
    "hog": textwrap.dedent("""
        import numpy as np, fastnn
        x = np.load(DATA + "/x_train.npy")
        fastnn.hog(x, channel_axis=-1)
    """),
    "script": textwrap.dedent("""
        import numpy as np, fastnn
        x, q = np.load(DATA + "/x_train.npy"), np.load(DATA + "/x_test.npy")
        y = np.load(DATA + "/y_train.npy")
        F = fastnn.hog(x, channel_axis=-1)
        fastnn.kneighbors(q.reshape(len(q), -1), x.reshape(len(x), -1), 5)
        fastnn.kneighbors(fastnn.hog(q, channel_axis=-1), F, 5)
        fastnn.HOGKNN(n_neighbors=1).fit(x, y).predict(q)
    """),
    "report": "import sys; from fastnn.cli import main; sys.exit(main(['report', '--quiet']))",
}


@pytest.fixture(scope="module")
def data_dir():
    with tempfile.TemporaryDirectory() as d:
        try:
            from fastnn.datasets import default_cifar_path, load_cifar10
            path = default_cifar_path()
            ds = load_cifar10(path) if path is not None else None
        except Exception:      # (random data below)
            ds = None
        if ds is not None:
            x, y, q = ds.x_train[:5000], ds.y_train[:5000], ds.x_test[:1000]
        else:
            rng = np.random.default_rng(0)
            x = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 10, 5000)
            q = rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
        for name, a in (("x_train", x), ("y_train", y), ("x_test", q)):
            np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(a))
        yield d


@pytest.fixture(scope="module")
def warm_cache():
    with tempfile.TemporaryDirectory() as d:
        yield d


def _run(script, data, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    code = f"DATA = {data!r}\n" + script
    subprocess.run([sys.executable, "-c", code], env=env, check=True,
                   stdout=subprocess.DEVNULL)


@pytest.mark.parametrize("scenario", list(SCRIPTS))
def test_cold(benchmark, scenario, data_dir, warm_cache):
    benchmark.group = f"coldstart-{scenario}"
    dirs = []

    def fresh_cache():
        dirs.append(tempfile.TemporaryDirectory())
        return (SCRIPTS[scenario], data_dir, dirs[-1].name), {}

    benchmark.pedantic(_run, setup=fresh_cache, rounds=3, iterations=1)
    _run(SCRIPTS[scenario], data_dir, warm_cache)        # fills the warm cache
    for d in dirs:
        d.cleanup()


@pytest.mark.parametrize("scenario", list(SCRIPTS))
def test_warm(benchmark, scenario, data_dir, warm_cache):
    benchmark.group = f"coldstart-{scenario}"
    _run(SCRIPTS[scenario], data_dir, warm_cache)        # (fills it if run alone)
    benchmark.pedantic(_run, args=(SCRIPTS[scenario], data_dir, warm_cache), rounds=3,
                       iterations=1)
