"""Saving and loading an index: fastnn's folder format against faiss
``write_index`` / ``read_index`` (IndexFlatL2), CIFAR-10 HOG features of the
50,000 training images (324 float32: 65 MB) and the raw pixels (uint8,
154 MB), in one run.

    pytest benchmarks/bench_persist.py --benchmark-only -p no:cacheprovider \\
        --benchmark-group-by=group --benchmark-columns=min,max,rounds

Every side the minimum of 3 rounds. Loads are followed by nothing: a memory
map costs its page faults later, at the first search; ``extra_info`` holds
the size on disk. The files are in the system's temporary folder (page
cache warm after the first round: the figures are the format's costs, not
the disk's). ``load-verify`` checks the blake2b checksum of every array
(reads every byte), ``load-trusted`` passes ``verify=False``.
"""

import os

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex, hog

_ROUNDS = 3


@pytest.fixture(scope="module")
def features(cifar):
    return {"hog": hog(cifar.x_train, channel_axis=-1, dtype=np.float32),
            "raw": cifar.x_train.reshape(50000, -1)}


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("op", ["save", "load-verify", "load-trusted"])
def test_fastnn(benchmark, features, kind, op, tmp_path):
    X = features[kind]
    index = NearestNeighborsIndex(X)
    index.save(tmp_path / "ix")
    benchmark.group = f"persist-{kind}-{op.split('-')[0]}"
    benchmark.extra_info["bytes"] = _size(tmp_path / "ix")
    if op == "save":
        benchmark.pedantic(lambda: index.save(tmp_path / "ix", overwrite=True), rounds=_ROUNDS)
    else:
        verify = op == "load-verify"
        benchmark.pedantic(lambda: NearestNeighborsIndex.load(tmp_path / "ix", verify=verify),
                           rounds=_ROUNDS)


@pytest.mark.parametrize("kind", ["hog", "raw"])
@pytest.mark.parametrize("op", ["save", "load", "load-mmap"])
def test_faiss_flat(benchmark, features, kind, op, tmp_path):
    faiss = pytest.importorskip("faiss")
    X = np.ascontiguousarray(features[kind], dtype=np.float32)
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    path = str(tmp_path / "flat.faiss")
    faiss.write_index(index, path)
    benchmark.group = f"persist-{kind}-{op.split('-')[0]}"
    benchmark.extra_info["bytes"] = _size(path)
    if op == "save":
        benchmark.pedantic(lambda: faiss.write_index(index, path), rounds=_ROUNDS)
    elif op == "load":
        benchmark.pedantic(lambda: faiss.read_index(path), rounds=_ROUNDS)
    else:
        benchmark.pedantic(lambda: faiss.read_index(path, faiss.IO_FLAG_MMAP), rounds=_ROUNDS)
