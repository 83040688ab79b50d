"""Figures of the workshop (PNG, matplotlib's Agg backend; nothing is shown).

* ``sample_grid`` — a few training images per class.
* ``hog_figure`` — one image, its gradient magnitude and its HOG picture.
* ``neighbors_grid`` — query images with their most similar and most
  dissimilar images (labels and distances).
* ``confusion_figure`` — a confusion matrix with class names.
* ``training_figure`` — loss and accuracy per epoch (train and test) of a keras model.
* ``distance_heatmap`` — the distances among the first test images.
"""

import numpy as np

__all__ = ["sample_grid", "hog_figure", "neighbors_grid", "confusion_figure", "training_figure",
           "distance_heatmap"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _show(ax, img, title=None, fontsize=7):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest",
              vmin=0, vmax=255 if img.dtype == np.uint8 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def sample_grid(images, labels, class_names, path, per_class=8, seed=0):
    """``per_class`` random training images of every class, one row per class."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    n_cls = len(class_names)
    fig, axes = plt.subplots(n_cls, per_class, figsize=(per_class * 0.9 + 1.2, n_cls * 0.9),
                             squeeze=False)
    for c in range(n_cls):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, min(per_class, idx.size), replace=False) if idx.size else []
        for t in range(per_class):
            ax = axes[c, t]
            if t < len(pick):
                _show(ax, images[pick[t]])
            else:
                ax.axis("off")
        axes[c, 0].set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("training samples per class", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def hog_figure(image, path, title="", **hog_kw):
    """An image, its gradient magnitude and its HOG picture (fastnn.hog)."""
    from .feature import hog

    plt = _plt()
    img = np.asarray(image)
    gray = img.astype(np.float64).mean(axis=-1) if img.ndim == 3 else img.astype(np.float64)
    g_row = np.zeros_like(gray)
    g_col = np.zeros_like(gray)
    g_row[1:-1, :] = gray[2:, :] - gray[:-2, :]
    g_col[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    kw = dict(hog_kw)
    if img.ndim == 3:
        kw.setdefault("channel_axis", -1)
    _, picture = hog(img, visualize=True, **kw)
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
    _show(axes[0], img, "image", 9)
    for ax, data, name in ((axes[1], g_col, "horizontal gradient"),
                           (axes[2], np.hypot(g_row, g_col), "gradient magnitude"),
                           (axes[3], picture, "HOG")):
        ax.imshow(data, cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def neighbors_grid(queries, query_labels, near, far, images, labels, class_names, path,
                   title="most similar | most dissimilar"):
    """One row per query: the query, its k nearest, then its k farthest images.

    ``near``/``far`` are ``(distances, indices)`` pairs into ``images``.
    """
    plt = _plt()
    nd, ni = near
    fd, fi = far
    nq, k = ni.shape
    cols = 1 + 2 * k
    fig, axes = plt.subplots(nq, cols, figsize=(cols * 1.05 + 0.3, nq * 1.35 + 0.5),
                             squeeze=False)
    for r in range(nq):
        _show(axes[r, 0], queries[r], f"query\n{class_names[query_labels[r]]}", 8)
        for t in range(k):
            j = ni[r, t]
            ok = labels[j] == query_labels[r]
            _show(axes[r, 1 + t], images[j], f"{class_names[labels[j]]}\n{nd[r, t]:.3g}")
            axes[r, 1 + t].title.set_color("green" if ok else "red")
        for t in range(k):
            j = fi[r, t]
            _show(axes[r, 1 + k + t], images[j], f"{class_names[labels[j]]}\n{fd[r, t]:.3g}")
            axes[r, 1 + k + t].title.set_color("gray")
    fig.suptitle(f"{title}  (label, Euclidean distance; green = same class)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_figure(y_true, y_pred, class_names, path, title="confusion matrix"):
    """Row-normalised confusion matrix with counts, readable class names."""
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    labels = np.arange(len(class_names))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True)
    norm = np.nan_to_num(norm)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in labels:
        for j in labels:
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(labels)
    ax.set_yticks(labels)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_figure(history, path, title=""):
    """The workshop's two panels per model: training and test loss, training
    and test accuracy, per epoch (``history`` as ``cnn.train`` returns it)."""
    plt = _plt()
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, key, name in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], marker="o", label=f"train {name}")
        ax.plot(epochs, history["val_" + key], marker="o", label=f"test {name}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def distance_heatmap(distances, labels, path, title="Distance"):
    """The workshop's heat map of the distances among the first images
    (``distances`` square; ``labels`` one string per row)."""
    plt = _plt()
    n = distances.shape[0]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(distances, cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
