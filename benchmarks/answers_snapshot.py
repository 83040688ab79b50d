"""Every backend's answers on CIFAR-10, saved for a before/after comparison
(a redesign of the engine must not change one index or distance).

    python benchmarks/answers_snapshot.py before.npz     # on the old tree
    python benchmarks/answers_snapshot.py after.npz      # on the new tree
    python benchmarks/answers_snapshot.py --compare before.npz after.npz

Raw pixels and float32 HOG, 3,000 test queries against the 50,000 training
images: backends auto, brute, pruned, faiss at k = 1, 10, 100 (the pruned
search also on the portable path), farthest k = 10, k = 300, an allowed
mask of every tenth row, an index of 40,000 rows plus ``add`` of 10,000,
Manhattan k = 5 and inner product k = 10. Needs the real CIFAR-10 archive.
"""

import sys
import time

import numpy as np


def snapshot(path):
    from fastnn import NearestNeighborsIndex, hog
    from fastnn.datasets import default_cifar_path, load_cifar10

    cifar_path = default_cifar_path()
    if cifar_path is None:
        sys.exit("the real CIFAR-10 archive was not found (../shared/data)")
    c = load_cifar10(cifar_path)
    out = {}
    spaces = {"raw": (c.x_train.reshape(50000, -1), c.x_test.reshape(10000, -1)[:3000]),
              "hog": (hog(c.x_train, channel_axis=-1, dtype=np.float32),
                      hog(c.x_test[:3000], channel_axis=-1, dtype=np.float32))}
    t0 = time.time()
    for kind, (X, Q) in spaces.items():
        for kernels in ("auto", "portable"):
            idx = NearestNeighborsIndex(X, kernels=kernels)
            for backend in ("auto", "brute", "pruned", "faiss"):
                if kernels == "portable" and backend != "pruned":
                    continue
                for k in (1, 10, 100):
                    key = f"{kind}-{kernels}-{backend}-k{k}"
                    out[key + "-d"], out[key + "-i"] = idx.kneighbors(Q, k, backend=backend)
            tag = f"{kind}-{kernels}"
            out[tag + "-far-d"], out[tag + "-far-i"] = idx.kneighbors(Q, 10, farthest=True)
            out[tag + "-k300-d"], out[tag + "-k300-i"] = idx.kneighbors(Q[:500], 300)
            mask = np.zeros(len(X), bool)
            mask[::10] = True
            out[tag + "-allowed-d"], out[tag + "-allowed-i"] = idx.kneighbors(Q, 10, allowed=mask)
            grown = NearestNeighborsIndex(X[:40000], kernels=kernels)
            grown.kneighbors(Q[:10], 1)                      # (builds, then extends)
            grown.add(X[40000:])
            out[tag + "-add-d"], out[tag + "-add-i"] = grown.kneighbors(Q, 10)
        out[kind + "-l1-d"], out[kind + "-l1-i"] = NearestNeighborsIndex(
            X, metric="manhattan").kneighbors(Q[:300], 5)
        out[kind + "-ip-d"], out[kind + "-ip-i"] = NearestNeighborsIndex(
            X, metric="ip").kneighbors(Q[:1000], 10)
        print(f"{kind} done at {time.time() - t0:.0f} s", flush=True)
    np.savez_compressed(path, **out)
    print(f"saved {len(out)} arrays to {path}")


def compare(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    if set(a.files) != set(b.files):
        sys.exit(f"different arrays: {sorted(set(a.files) ^ set(b.files))}")
    differ = [f for f in a.files if not np.array_equal(a[f], b[f])]
    print(f"{len(a.files)} arrays compared; differing: {differ or 'none'}")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    snapshot(sys.argv[1])
