"""pytest plugin: scikit-learn's own neighbours tests on fastnn's classes.

Loaded with ``-p sklearn_suite_plugin`` (``tests/`` on ``PYTHONPATH``) when
running the test files installed with scikit-learn
(``--pyargs sklearn.neighbors.tests.test_neighbors``...): before collection
``fastnn.patch_sklearn()`` puts fastnn's seven classes in
``sklearn.neighbors``, so every test that builds one of them builds
fastnn's. At the end it writes how many fits fastnn's engine served and
how many scikit-learn did (``FASTNN_SUITE_REPORT``, JSON), so the caller can
check the tests really reached fastnn.
"""

import json
import os

served = {"fastnn": 0, "sklearn": 0}


def pytest_configure(config):
    import fastnn
    from fastnn import estimators
    fastnn.patch_sklearn()
    original_fit = estimators._FastEngineMixin._fit

    def counting_fit(self, X, y=None):
        out = original_fit(self, X, y)
        served[self.engine_] += 1
        return out

    estimators._FastEngineMixin._fit = counting_fit


def pytest_unconfigure(config):
    path = os.environ.get("FASTNN_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(served, f)
