"""HOG on 60,000 CIFAR-shaped images: fastnn vs skimage loop vs OpenCV, one run.

Every side is the minimum of 3 rounds after one untimed call (warm against
warm); threads: fastnn all numba threads (2 here), skimage and OpenCV one.

    pytest benchmarks/bench_hog.py --benchmark-only -p no:cacheprovider

Ratios are printed at the end (``--benchmark-group-by=group``).
"""

import time

import pytest

from fastnn import hog


def test_hog_fastnn(benchmark, cifar_shaped):
    t = time.perf_counter()
    hog(cifar_shaped[:2], channel_axis=-1)          # cached JIT (or compile) cost
    benchmark.extra_info["first_call_s"] = time.perf_counter() - t
    benchmark.group = "hog-60k"
    # (one untimed full round: the first 155 MB output of a process pays
    # its page faults; the skimage loop's per-image outputs do not)
    benchmark.pedantic(hog, args=(cifar_shaped,), kwargs=dict(channel_axis=-1),
                       rounds=3, warmup_rounds=1)


def test_hog_skimage_loop(benchmark, cifar_shaped):
    from skimage.feature import hog as sk_hog
    benchmark.group = "hog-60k"
    sk_hog(cifar_shaped[0], channel_axis=-1)
    benchmark.pedantic(lambda: [sk_hog(x, channel_axis=-1) for x in cifar_shaped], rounds=3)


def test_hog_opencv(benchmark, cifar_shaped):
    cv2 = pytest.importorskip("cv2")
    d = cv2.HOGDescriptor((32, 32), (16, 16), (8, 8), (8, 8), 9)
    d.compute(cifar_shaped[0])
    benchmark.group = "hog-60k"
    benchmark.pedantic(lambda: [d.compute(x) for x in cifar_shaped], rounds=3)


# The float path (transform_sqrt, float images): 10,000 images, fastnn and
# skimage in one run: one untimed call, then the minimum of 3 rounds each.
def test_hog_sqrt_fastnn(benchmark, cifar_shaped):
    x = cifar_shaped[:10000]
    hog(x[:2], channel_axis=-1, transform_sqrt=True)
    benchmark.group = "hog-sqrt-10k"
    benchmark.pedantic(hog, args=(x,), kwargs=dict(channel_axis=-1, transform_sqrt=True),
                       rounds=3, warmup_rounds=0)


def test_hog_sqrt_skimage_loop(benchmark, cifar_shaped):
    from skimage.feature import hog as sk_hog
    x = cifar_shaped[:10000]
    sk_hog(x[0], channel_axis=-1, transform_sqrt=True)
    benchmark.group = "hog-sqrt-10k"
    benchmark.pedantic(lambda: [sk_hog(im, channel_axis=-1, transform_sqrt=True) for im in x],
                       rounds=3)
