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

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load_cifar10", "fetch_cifar10", "load_digits_images",
           "default_cifar_path", "CIFAR10_URL", "CIFAR10_SHA256"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

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


def default_data_home(data_home=None):
    """Where ``fetch_cifar10`` keeps its files: ``data_home``, else
    ``$FASTNN_DATA``, else ``~/.cache/fastnn/data``."""
    if data_home is None:
        data_home = os.environ.get("FASTNN_DATA", Path.home() / ".cache" / "fastnn" / "data")
    return Path(data_home).expanduser()


def default_cifar_path():
    """CIFAR-10 on this machine: the shared archive next to the project,
    ``$FASTNN_CIFAR10``, or a copy fetched by ``fetch_cifar10``; else None."""
    here = Path(__file__).resolve()
    for parent in list(here.parents)[:6] + [Path.cwd()]:
        cand = parent.parent / "shared" / "data" / "cifar10-images.tar.gz"
        if cand.is_file():
            return cand
    env = os.environ.get("FASTNN_CIFAR10")
    if env and Path(env).exists():
        return Path(env)
    fetched = default_data_home() / "cifar-10-batches-py"
    if (fetched / "batches.meta").is_file():
        return fetched
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


def _download(url, dest, sha256, progress, timeout):
    """Stream ``url`` into a temporary file next to ``dest``, check its
    sha256, then rename it into place; nothing is left behind on failure."""
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}")
            try:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and out.tell() != total:
                raise ValueError(f"download of {url} truncated: {out.tell()} of {total} bytes")
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise ValueError(f"sha256 mismatch for {url}: expected {sha256}, got {got}")
        os.replace(tmp, dest)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        import http.client
        if isinstance(exc, http.client.HTTPException):
            raise ValueError(f"download of {url} failed (truncated?): {exc!r}") from None
        if isinstance(exc, OSError):
            raise ConnectionError(f"download of {url} failed: {exc}") from None
        raise


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_extract(archive, target_parent, member_root):
    """Extract ``archive`` into a temporary folder and move ``member_root``
    into ``target_parent``. Refuses absolute paths, ``..`` components, links
    and special files before anything is written; cleans up on failure."""
    tmpdir = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    parts = Path(m.name).parts
                    if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() \
                            or ".." in parts:
                        raise ValueError(f"unsafe path in archive {archive.name}: {m.name!r}")
                    if not (m.isfile() or m.isdir()):
                        raise ValueError(f"archive {archive.name} holds a link or special "
                                         f"file: {m.name!r}")
                tf.extractall(tmpdir, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt or truncated archive {archive}: {exc}") from None
        src = tmpdir / member_root
        if not (src / "batches.meta").is_file():
            raise ValueError(f"archive {archive.name} has no {member_root}/batches.meta")
        dest = target_parent / member_root
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
        return dest
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def fetch_cifar10(data_home=None, *, url=CIFAR10_URL, sha256=CIFAR10_SHA256,
                  progress=False, timeout=60):
    """Download the official CIFAR-10 python archive (once) and load it.

    The archive is streamed into a temporary file, checked against
    ``sha256`` and only then renamed into ``data_home``; it is extracted into
    a temporary folder (absolute paths, ``..``, links and special files are
    refused) and moved into place as ``cifar-10-batches-py``. A failed
    download or extraction leaves no partial files.

    Parameters
    ----------
    data_home : str or Path, optional
        Folder for the archive and the extracted batches (default
        ``$FASTNN_DATA`` or ``~/.cache/fastnn/data``).
    url, sha256 : str
        Source and its expected SHA-256 (the official archive by default;
        ``sha256=None`` skips the check, e.g. for a trusted mirror).
    progress : bool
        Show a download progress bar.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Checksum mismatch, truncated or corrupt archive, unsafe member paths.
    """
    home = default_data_home(data_home)
    home.mkdir(parents=True, exist_ok=True)
    batches = home / "cifar-10-batches-py"
    if (batches / "batches.meta").is_file():
        return load_cifar10(batches)
    archive = home / "cifar-10-python.tar.gz"
    if archive.is_file() and sha256 is not None and _sha256_file(archive) != sha256.lower():
        archive.unlink()                 # a stale or damaged earlier download
    if not archive.is_file():
        _download(url, archive, sha256, progress, timeout)
    _safe_extract(archive, home, "cifar-10-batches-py")
    return load_cifar10(batches)


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
