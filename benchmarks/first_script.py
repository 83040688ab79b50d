"""The issue's first script (cold-start scenario ``script`` of
bench_coldstart.py, standalone): HOG of 5,000 CIFAR-10 images, raw-pixel and
HOG k-NN, HOGKNN fit/predict. Random CIFAR-shaped images where the archive is
absent."""

import numpy as np

import fastnn

try:
    from fastnn.datasets import default_cifar_path, load_cifar10
    ds = load_cifar10(default_cifar_path())
    x, y, q = ds.x_train[:5000], ds.y_train[:5000], ds.x_test[:1000]
except Exception:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 5000)
    q = rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)

F = fastnn.hog(x, channel_axis=-1)
fastnn.kneighbors(q.reshape(len(q), -1), x.reshape(len(x), -1), 5)
fastnn.kneighbors(fastnn.hog(q, channel_axis=-1), F, 5)
fastnn.HOGKNN(n_neighbors=1).fit(x, y).predict(q)
