"""pytest plugin: scikit-learn's own neighbours tests on fastnn's classes.

Loaded with ``-p sklearn_suite_plugin`` (``tests/`` on ``PYTHONPATH``) when
running the test files installed with scikit-learn
(``--pyargs sklearn.neighbors.tests.test_neighbors``...): before collection
``fastnn.patch_sklearn()`` puts fastnn's seven classes in
``sklearn.neighbors``, so every test that builds one of them builds
fastnn's. At the end it writes how many fits fastnn's engine served and
how many scikit-learn did (``fastnn.estimators.ENGINE_FITS``, to the file
``FASTNN_SUITE_REPORT`` names, JSON), so the caller can
check the tests really reached fastnn.
"""

import json
import os


def pytest_configure(config):
    import fastnn
    fastnn.patch_sklearn()


def pytest_unconfigure(config):
    from fastnn.estimators import ENGINE_FITS
    path = os.environ.get("FASTNN_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"fastnn": ENGINE_FITS["fastnn"], "sklearn": ENGINE_FITS["sklearn"]}, f)
