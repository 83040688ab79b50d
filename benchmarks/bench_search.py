"""CIFAR-10 test vs train k-NN: fastnn (index build included) on every kernel
path this CPU runs, against faiss flat, faiss HNSW and sklearn, in one run.

    pytest benchmarks/bench_search.py --benchmark-only -p no:cacheprovider \\
        --benchmark-group-by=group --benchmark-columns=min,max,rounds

The ratio column of each group compares minimum times. fastnn and faiss run
three rounds each (index build included in every one: an IndexFlatL2 is
built and filled, an HNSW graph built), after one untimed round; sklearn
(a minute a round on raw pixels) runs once. Threads: all cores for every
library (numba, BLAS and faiss's OpenMP: 2 on this machine). The header
names the CPU, its features and the kernel family each fastnn path uses;
each fastnn row's ``extra_info`` holds the search statistics
(``first_stage`` names the path that ran) and the HNSW rows hold
``recall@k`` against the exact answer.

Paths: ``auto`` (what the engine picks here: AMX; else the AVX-512 VNNI
int8 first stage, on Intel and AMD alike, with AVX-512 VNNI int8 exact
products), ``avx512`` (the AVX-512 BF16/VNNI family forced,
where it runs), ``int8`` (the int8 first stage forced:
``PrunedOptions(first_stage='int8')``), ``float32`` (the float32 BLAS first
stage with this CPU's other kernels), ``avxvnni`` / ``avx2`` (the kernels of
a CPU without AVX-512: the 256-bit int8 first stage) and ``portable`` (no tile kernels: float32
BLAS and numba, the path of ARM CPUs; on this CPU numba and BLAS still use
its AVX-512). To measure
an AVX2-only CPU's code on an AVX-512 machine, run the whole file with
``FASTNN_AVX512=0 NUMBA_CPU_NAME=haswell OPENBLAS_CORETYPE=Haswell
NPY_DISABLE_CPU_FEATURES=X86_V4`` and an empty ``NUMBA_CACHE_DIR``.
"""

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex, hog
from fastnn.kernels import amx

_ROUNDS = 3
PATHS = ["auto", "avx512", "int8", "float32", "avxvnni", "avx2", "portable"]
# faiss HNSW as users configure it when brute force is slow (recall@10 ~0.97
# on CIFAR HOG)
_HNSW = dict(M=32, efConstruction=40, efSearch=64)


def _cpu_line():
    import llvmlite.binding as ll
    f = ll.get_host_cpu_features()
    flags = [k for k in ("avx2", "avx512f", "avx512bf16", "avx512vnni", "amx-bf16", "amx-int8")
             if f.get(k)]
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from fastnn.neighbors.pruned.options import resolve_first_stage
    from fastnn.neighbors.validation import kernel_families
    bf16, int8 = kernel_families("auto")
    first, int8_kernels = resolve_first_stage("auto", "auto", (bf16, int8))
    first = {"bf16": f"{bf16} bfloat16", "int8": f"{int8_kernels} int8",
             "float32": "float32 BLAS"}[first]
    return (f"CPU {model} ({ll.get_host_cpu_name()}): {' '.join(flags)}; kernels='auto' "
            f"runs: first stage {first}, int8 products {int8 or 'none'}")


@pytest.fixture(scope="module", autouse=True)
def _print_cpu(faiss_blas):
    print("\n" + _cpu_line() + f"; faiss's OpenBLAS core: {faiss_blas}")


_FEATURES = {}


def _features(cifar, kind):
    if kind not in _FEATURES:
        if kind == "raw":
            _FEATURES[kind] = (cifar.x_train.reshape(50000, -1), cifar.x_test.reshape(10000, -1))
        else:
            _FEATURES[kind] = (hog(cifar.x_train, channel_axis=-1, dtype=np.float32),
                               hog(cifar.x_test, channel_axis=-1, dtype=np.float32))
    return _FEATURES[kind]


_EXACT = {}


def _exact(cifar, kind, k):
    """The exact answer (fastnn's, checked against faiss flat's distances
    in test_faiss_flat) for the recall of HNSW."""
    if (kind, k) not in _EXACT:
        X, Q = _features(cifar, kind)
        _EXACT[kind, k] = NearestNeighborsIndex(X).kneighbors(Q, k)
    return _EXACT[kind, k]


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("path", PATHS)
def test_fastnn(benchmark, cifar, kind, k, path):
    if path == "avx512" and not amx.available("avx512"):
        pytest.skip("no AVX-512 BF16 kernels on this CPU")
    if path == "int8" and not amx.available_int8("avx512"):
        pytest.skip("no AVX-512 VNNI on this CPU (or FASTNN_AVX512=0)")
    if path in ("avx2", "avxvnni") and not amx.available_int8(path):
        pytest.skip(f"no {path} on this CPU (or FASTNN_AVX2=0)")
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k{k}"
    params = (dict(pruned_options={"first_stage": path}) if path in ("int8", "float32")
              else dict(kernels=path))

    def run():
        idx = NearestNeighborsIndex(X, **params)
        out = idx.kneighbors(Q, k)
        benchmark.extra_info.update(idx.stats_)
        return out
    _, ind = benchmark.pedantic(run, rounds=_ROUNDS, warmup_rounds=1)
    np.testing.assert_array_equal(ind, _exact(cifar, kind, k)[1])   # every path: one answer


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_faiss_flat(benchmark, cifar, kind, k):
    faiss = pytest.importorskip("faiss")
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k{k}"

    def run():
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(np.ascontiguousarray(X, dtype=np.float32))
        return index.search(np.ascontiguousarray(Q, dtype=np.float32), k)
    benchmark.pedantic(run, rounds=_ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("part", ["build", "query"])
def test_faiss_hnsw(benchmark, cifar, kind, k, part):
    """faiss IndexHNSWFlat (approximate): its graph build and its queries
    timed apart, recall@k against the exact neighbours."""
    faiss = pytest.importorskip("faiss")
    X, Q = _features(cifar, kind)
    Xf = np.ascontiguousarray(X, dtype=np.float32)
    Qf = np.ascontiguousarray(Q, dtype=np.float32)
    benchmark.group = f"{kind}-k{k}"

    def build():
        index = faiss.IndexHNSWFlat(X.shape[1], _HNSW["M"])
        index.hnsw.efConstruction = _HNSW["efConstruction"]
        index.add(Xf)
        index.hnsw.efSearch = _HNSW["efSearch"]
        return index
    if part == "build":
        benchmark.pedantic(build, rounds=1)
        return
    index = build()
    _, ind = benchmark.pedantic(lambda: index.search(Qf, k), rounds=_ROUNDS, warmup_rounds=1)
    exact = _exact(cifar, kind, k)[1]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ind, exact)])
    benchmark.extra_info[f"recall@{k}"] = float(recall)
    benchmark.extra_info.update(_HNSW)


@pytest.mark.parametrize("kind", ["hog", "raw"])
def test_sklearn_kneighbors(benchmark, cifar, kind):
    from sklearn.neighbors import NearestNeighbors
    X, Q = _features(cifar, kind)
    benchmark.group = f"{kind}-k1"
    benchmark.pedantic(lambda: NearestNeighbors(n_neighbors=1, algorithm="brute")
                       .fit(X).kneighbors(Q), rounds=1)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("impl", ["fastnn", "sklearn"])
def test_pairwise_10k(benchmark, cifar, kind, impl):
    """pairwise_distances of the 10,000 test images (10,000 x 10,000)."""
    from sklearn.metrics import pairwise_distances as sk_pd

    from fastnn import pairwise_distances
    _, Q = _features(cifar, kind)
    benchmark.group = f"pairwise-10k-{kind}"
    fn = pairwise_distances if impl == "fastnn" else sk_pd
    # one untimed full-size round each: the first 800 MB result in a process
    # pays page faults (and transparent-huge-page compaction on this VM) that
    # the implementation running second would otherwise inherit for free
    out = benchmark.pedantic(lambda: fn(Q), rounds=_ROUNDS, warmup_rounds=1)
    assert out.shape == (10000, 10000)


@pytest.mark.parametrize("kind,nq", [("hog", 1000), ("raw", 100)])
@pytest.mark.parametrize("impl", ["fastnn", "sklearn"])
def test_manhattan_1nn(benchmark, cifar, kind, nq, impl):
    """Manhattan 1-NN of the first ``nq`` test images against all 50,000
    (every exact distance; sklearn brute force for reference)."""
    from sklearn.neighbors import NearestNeighbors
    X, Q = _features(cifar, kind)
    Q = Q[:nq]
    benchmark.group = f"manhattan-{kind}-{nq}q"
    if impl == "fastnn":
        NearestNeighborsIndex(X[:500], metric="manhattan").kneighbors(Q[:5], 1)
        fn = lambda: NearestNeighborsIndex(X, metric="manhattan").kneighbors(Q, 1)  # noqa: E731
    else:
        fn = lambda: (NearestNeighbors(n_neighbors=1, algorithm="brute",  # noqa: E731
                                       metric="manhattan").fit(X).kneighbors(Q))
    benchmark.pedantic(fn, rounds=1)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("impl", ["fastnn", "fastnn-gemm", "faiss-flat-ip"])
def test_inner_product_k10(benchmark, cifar, kind, impl):
    """Maximum inner product search, k=10, index build included: fastnn's
    'auto' (the Euclidean route through the pruned search), its GEMM route
    (``backend='brute'``) and faiss ``IndexFlatIP``, the same rounds each;
    fastnn's answers must agree with each other."""
    X, Q = _features(cifar, kind)
    benchmark.group = f"ip-{kind}-k10"
    if impl == "faiss-flat-ip":
        faiss = pytest.importorskip("faiss")

        def run():
            index = faiss.IndexFlatIP(X.shape[1])
            index.add(np.ascontiguousarray(X, dtype=np.float32))
            return index.search(np.ascontiguousarray(Q, dtype=np.float32), 10)
        benchmark.pedantic(run, rounds=_ROUNDS, warmup_rounds=1)
        return
    backend = "brute" if impl == "fastnn-gemm" else "auto"

    def run():
        index = NearestNeighborsIndex(X, metric="ip", backend=backend)
        out = index.kneighbors(Q, 10)
        benchmark.extra_info.update(index.stats_)
        return out
    _, ind = benchmark.pedantic(run, rounds=_ROUNDS, warmup_rounds=1)
    if ("ip", kind) not in _EXACT:
        _EXACT["ip", kind] = ind
    np.testing.assert_array_equal(ind, _EXACT["ip", kind])
