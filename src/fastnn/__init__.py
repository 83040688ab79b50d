"""fastnn: fast exact nearest neighbours and batch HOG for images.

Numba-parallel and FAISS-backed kernels behind scikit-learn-compatible
estimators, checked against scikit-image and scikit-learn.
"""

__version__ = "0.1.0"

from .feature import hog  # noqa: E402

__all__ = ["hog", "__version__"]

from .estimators import HOGKNN, HOGTransformer, KNeighborsClassifier, KNeighborsTransformer  # noqa: E402
from .neighbors import NearestNeighborsIndex, kneighbors, pairwise_distances  # noqa: E402

__all__ += ["HOGKNN", "HOGTransformer", "KNeighborsClassifier", "KNeighborsTransformer",
            "NearestNeighborsIndex", "kneighbors", "pairwise_distances"]
