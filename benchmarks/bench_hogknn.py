"""End-to-end HOG + 1-NN on CIFAR-10 (50,000 / 10,000): fastnn HOGKNN vs
skimage hog per image + sklearn KNeighborsClassifier, in one run.

    pytest benchmarks/bench_hogknn.py --benchmark-only -p no:cacheprovider

Both sides: the minimum of ``ROUNDS`` timed runs after one untimed run
(the reference takes ~30 s a run, so the file takes ~3 minutes); threads:
all cores for numba and BLAS (the skimage loop is single-threaded by
nature).
"""

import numpy as np

ROUNDS = 3


def test_fastnn_hogknn(benchmark, cifar):
    """The untimed first run also pays the first large allocations of the
    process (~0.3 s of page faults on a VM: 130 MB first touched in 0.31 s,
    later in 0.02 s)."""
    from fastnn import HOGKNN
    benchmark.group = "hogknn-cifar10"

    def run():
        return HOGKNN(1).fit(cifar.x_train, cifar.y_train).predict(cifar.x_test)
    pred = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["accuracy"] = float((pred == cifar.y_test).mean())


def test_skimage_sklearn(benchmark, cifar):
    from skimage.feature import hog
    from sklearn.neighbors import KNeighborsClassifier
    benchmark.group = "hogknn-cifar10"

    def run():
        f_tr = np.stack([hog(i, channel_axis=-1) for i in cifar.x_train])
        f_te = np.stack([hog(i, channel_axis=-1) for i in cifar.x_test])
        return KNeighborsClassifier(1).fit(f_tr, cifar.y_train).predict(f_te)
    pred = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["accuracy"] = float((pred == cifar.y_test).mean())
