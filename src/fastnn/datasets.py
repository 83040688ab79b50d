"""Datasets: CIFAR-10 in its usual layouts, and an embedded default (digits).

``load_cifar10(path)`` reads
* the official python batches folder (``cifar-10-batches-py``) or its
  ``cifar-10-python.tar.gz``;
* a class-per-folder image tree (``train/<class>/*.png|jpg``,
  ``test/<class>/...``) or a ``.tar.gz`` of one;
* keras' cache (``~/.keras/datasets/cifar-10-batches-py``) when ``path`` is None.

Decoded image archives are cached as ``.npz`` under ``~/.cache/fastnn`` (or
``$FASTNN_CACHE``), keyed by the archive's size and mtime, so a second load
takes a fraction of a second.
"""

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load_cifar10", "load_digits_images", "default_cifar_path"]

_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Dataset:
    """Train/test split of images: uint8 ``(n, rows, cols[, 3])`` arrays."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    name: str = ""

    @property
    def channel_axis(self):
        return -1 if self.x_train.ndim == 4 else None


def default_cifar_path():
    """The shared CIFAR-10 archive next to the project, if present."""
    here = Path(__file__).resolve()
    for parent in list(here.parents)[:6] + [Path.cwd()]:
        cand = parent.parent / "shared" / "data" / "cifar10-images.tar.gz"
        if cand.is_file():
            return cand
    env = os.environ.get("FASTNN_CIFAR10")
    if env and Path(env).exists():
        return Path(env)
    return None


def _cache_dir():
    d = Path(os.environ.get("FASTNN_CACHE", Path.home() / ".cache" / "fastnn"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _unpickle(f):
    try:
        return pickle.load(f, encoding="bytes")
    except Exception as exc:  # corrupt or foreign pickle
        raise ValueError(f"corrupt CIFAR-10 batch: {exc}") from None


def _batch_arrays(d):
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError("corrupt CIFAR-10 batch: no 'data'/'labels' entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"corrupt CIFAR-10 batch: data of shape {data.shape}, expected (n, 3072)")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)


def _from_batches(read):
    """``read(name)`` returns a file object for a member of the batches folder."""
    meta = _unpickle(read("batches.meta"))
    names = [n.decode() if isinstance(n, bytes) else n
             for n in meta.get(b"label_names", meta.get("label_names", []))]
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _batch_arrays(_unpickle(read(f"data_batch_{i}")))
        xs.append(x)
        ys.append(y)
    xt, yt = _batch_arrays(_unpickle(read("test_batch")))
    return Dataset(np.concatenate(xs), np.concatenate(ys), xt, yt, names, "cifar10")


def _decode(data):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _from_members(members, progress=False):
    """members: iterable of (relative path parts, bytes loader)."""
    split_items = {"train": [], "test": []}
    for parts, load in members:
        if len(parts) < 3 or not parts[-1].lower().endswith(_IMG_EXT):
            continue
        split, cls = parts[-3], parts[-2]
        if split in split_items:
            split_items[split].append((cls, parts[-1], load))
    if not split_items["train"] or not split_items["test"]:
        raise ValueError("not a CIFAR-10 image tree: expected train/<class>/*.jpg|png "
                         "and test/<class>/*.jpg|png")
    classes = sorted({c for c, _, _ in split_items["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        items = sorted(split_items[split], key=lambda t: (t[0], t[1]))
        it = items
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(items, desc=f"decoding {split}", unit="img")
        x = np.stack([_decode(load()) for _, _, load in it])
        y = np.array([index[c] for c, _, _ in items], dtype=np.int64)
        out += [x, y]
    return Dataset(out[0], out[1], out[2], out[3], classes, "cifar10")


def load_cifar10(path=None, *, progress=False, cache=True):
    """Load CIFAR-10 from ``path`` (see module docstring for the layouts).

    Returns
    -------
    Dataset
        uint8 ``(n, 32, 32, 3)`` images, int64 labels and the class names.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (or no keras cache when ``path`` is None).
    ValueError
        Unknown layout or a corrupt file.
    """
    if path is None:
        keras = Path.home() / ".keras" / "datasets" / "cifar-10-batches-py"
        if keras.is_dir():
            path = keras
        else:
            raise FileNotFoundError("no CIFAR-10 path given and no keras cache at " + str(keras))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir():
        if (path / "batches.meta").is_file():
            return _from_batches(lambda name: open(path / name, "rb"))
        sub = path / "cifar-10-batches-py"
        if (sub / "batches.meta").is_file():
            return _from_batches(lambda name: open(sub / name, "rb"))
        files = [p for p in path.rglob("*") if p.is_file()]
        return _from_members(((p.relative_to(path).parts, p.read_bytes) for p in files), progress)
    if not tarfile.is_tarfile(path):
        raise ValueError(f"unknown dataset format: {path} is neither a folder nor a tar archive")
    st = path.stat()
    key = _cache_dir() / f"{path.name}-{st.st_size}-{int(st.st_mtime)}.npz"
    if cache and key.is_file():
        z = np.load(key, allow_pickle=False)
        return Dataset(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                       [str(c) for c in z["class_names"]], "cifar10")
    try:
        with tarfile.open(path, "r:*") as tf:
            names = tf.getnames()
            meta = [n for n in names if n.endswith("batches.meta")]
            if meta:
                root = meta[0][: -len("batches.meta")]
                ds = _from_batches(lambda name: tf.extractfile(root + name))
            else:
                members = [m for m in tf.getmembers() if m.isfile()]
                data = {m.name: tf.extractfile(m).read() for m in members}
                ds = _from_members(((Path(n).parts, (lambda d=d: d)) for n, d in data.items()),
                                   progress)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"corrupt or truncated archive {path}: {exc}") from None
    if cache:
        tmp = key.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                 y_test=ds.y_test, class_names=np.array(ds.class_names))
        os.replace(tmp, key)
    return ds


def load_digits_images(test_size=0.25, random_state=0):
    """scikit-learn's bundled 8x8 digits as a train/test image split (no download).

    The 0..16 intensities are scaled to uint8 0..255 so the same code paths
    as for CIFAR-10 apply.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    # upscale 8x8 -> 16x16 (nearest) so HOG's default 8x8 cells would fit 2x2 cells
    x = x.repeat(2, axis=1).repeat(2, axis=2)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_size,
                                          random_state=random_state, stratify=d.target)
    return Dataset(np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte,
                   [str(i) for i in range(10)], "digits")
