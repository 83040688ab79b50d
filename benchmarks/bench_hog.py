"""HOG on 60,000 CIFAR-shaped images: fastnn vs skimage loop vs OpenCV, one run.

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
    benchmark.pedantic(hog, args=(cifar_shaped,), kwargs=dict(channel_axis=-1),
                       rounds=5, warmup_rounds=1)


def test_hog_skimage_loop(benchmark, cifar_shaped):
    from skimage.feature import hog as sk_hog
    benchmark.group = "hog-60k"
    benchmark.pedantic(lambda: [sk_hog(x, channel_axis=-1) for x in cifar_shaped], rounds=1)


def test_hog_opencv(benchmark, cifar_shaped):
    cv2 = pytest.importorskip("cv2")
    d = cv2.HOGDescriptor((32, 32), (16, 16), (8, 8), (8, 8), 9)
    benchmark.group = "hog-60k"
    benchmark.pedantic(lambda: [d.compute(x) for x in cifar_shaped], rounds=3)
