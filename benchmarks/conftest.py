import numpy as np
import pytest


@pytest.fixture(scope="session")
def cifar():
    from fastnn.datasets import default_cifar_path, load_cifar10
    path = default_cifar_path()
    if path is None:
        pytest.skip("real CIFAR-10 archive not found in ../shared/data")
    return load_cifar10(path)


@pytest.fixture(scope="session")
def cifar_shaped():
    return np.random.default_rng(0).integers(0, 256, (60000, 32, 32, 3), dtype=np.uint8)
