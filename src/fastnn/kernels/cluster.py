"""Numba kernels of the index's clustering (k-means labels and the cluster
order). Only the pruned search's speed depends on them, never an answer;
they are still deterministic: every row is labelled on its own."""

from numba import njit


@njit(cache=True, nogil=True)
def nearest_from_products(P, cn, out):
    """``out[i] = argmin_j(cn[j] - 2 P[i, j])`` (the first of equal minima):
    the nearest centroid of row ``i`` from its products ``P`` with the
    centroids and their squared norms ``cn``. One pass; numpy's
    ``argmin(axis=1)`` over a few dozen columns runs a short loop per row
    (~4 ms for 50,000 x 24, plus two passes for the arithmetic)."""
    n, m = P.shape
    for i in range(n):
        best = cn[0] - 2.0 * P[i, 0]
        b = 0
        for j in range(1, m):
            v = cn[j] - 2.0 * P[i, j]
            if v < best:
                best = v
                b = j
        out[i] = b


@njit(cache=True, nogil=True)
def counting_order(labels, n_clusters, perm, starts):
    """The stable order of ``labels`` (``argsort(kind='stable')``) by a
    counting sort: ``perm`` lists the rows of label 0 in index order, then
    label 1, ...; ``starts[c]`` is where label ``c`` begins
    (``starts[n_clusters] == len(labels)``). Labels must lie in
    ``[0, n_clusters)``."""
    starts[:] = 0
    for i in range(labels.shape[0]):
        starts[labels[i] + 1] += 1
    for c in range(n_clusters):
        starts[c + 1] += starts[c]
    pos = starts[:n_clusters].copy()
    for i in range(labels.shape[0]):
        c = labels[i]
        perm[pos[c]] = i
        pos[c] += 1


@njit(cache=True, nogil=True)
def centroid_sums(S, labels, sums, counts):
    """Per label, the float64 sum of its rows of ``S`` (in index order) and
    their count (a Lloyd step's new centroids are ``sums / counts``)."""
    sums[:] = 0.0
    counts[:] = 0
    for i in range(S.shape[0]):
        c = labels[i]
        counts[c] += 1
        for t in range(S.shape[1]):
            sums[c, t] += S[i, t]
