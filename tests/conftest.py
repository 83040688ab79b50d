import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# JIT compilation makes first calls slow: no deadlines.
settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=120,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def cifar():
    """The real CIFAR-10 from ../shared/data (skips when absent)."""
    from fastnn.datasets import default_cifar_path, load_cifar10

    path = default_cifar_path()
    if path is None:
        pytest.skip("real CIFAR-10 archive not found (../shared/data/cifar10-images.tar.gz "
                    "or $FASTNN_CIFAR10)")
    return load_cifar10(path)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
