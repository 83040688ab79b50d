"""Saving and loading a ``NearestNeighborsIndex``: a folder of ``.npy`` files
and a JSON header, no pickle.

Format (version 1)::

    PATH/
      header.json           format name and version, fastnn version, the
                            index's parameters, dtype and shape of the data,
                            every scalar of its built state, and per array:
                            file, dtype, shape and a blake2b-128 checksum
      X.npy                 the data (uint8 stays uint8)
      <name>.npy            each built array (projection, clusters, packed
                            stage-1 rows, ...), e.g. proj.W1.npy

``load(path, mmap_mode='r')`` memory-maps every array (the OS shares their
pages between processes); by default each array is checked against its
checksum first (``verify=False`` trusts the files and opens any index in
milliseconds). A header of another format or version, a missing, truncated
or altered file, or a dtype or shape other than the header's is a
``ValueError`` naming the file: never a wrong answer.

The built state is what the index computed from the data (its projection,
clustering and first-stage rows). It is saved when present; a process whose
CPU runs another kernel family than the saving one (e.g. tile kernels
against the portable path) rebuilds the parts that depend on it on first
use, so a saved index answers identically everywhere.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "fastnn-index"
VERSION = 1
_HEADER = "header.json"
_CHUNK = 1 << 24        # bytes hashed per update (a memory map is read in pieces)

# the index attributes saved (built state: arrays and scalars, nested dicts
# and tuples of them); the rest are rebuilt or belong to the process
_PARAMS = ("metric", "backend", "n_components", "n_jobs", "random_state", "kernels")
_STATE = ("is_int", "_absmax", "first_stage_components", "_mid_step", "_extra_seeds",
          "_xn", "_pca_cache", "_resid_estimate", "_proj", "_u8s", "_tile_family",
          "_int8_family")


def checksum(a):
    """blake2b-128 of the array's bytes (C order), as hex."""
    h = hashlib.blake2b(digest_size=16)
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    for s in range(0, flat.size, _CHUNK):
        h.update(flat[s:s + _CHUNK])
    return h.hexdigest()


def _flatten(value, key, arrays):
    """JSON-able description of ``value``; arrays go to ``arrays[key]``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if isinstance(value, dict):
        return {"dict": {k: _flatten(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (tuple, list)):
        return {"tuple": [_flatten(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not np.isfinite(value):
            return {"float": repr(value)}          # (inf / nan are not JSON)
        return {"value": value}
    raise TypeError(f"cannot save {key} of type {type(value).__name__}")


def _unflatten(desc, arrays):
    if "array" in desc:
        return arrays[desc["array"]]
    if "dict" in desc:
        return {k: _unflatten(v, arrays) for k, v in desc["dict"].items()}
    if "tuple" in desc:
        return tuple(_unflatten(v, arrays) for v in desc["tuple"])
    if "float" in desc:
        return float(desc["float"])
    return desc["value"]


def save(index, path, overwrite=False):
    """Write ``index`` to the folder ``path`` (see the module docstring).

    The folder is written next to its final place and renamed into it, so a
    failed save leaves no half-written index; an existing ``path`` is a
    ``FileExistsError`` unless ``overwrite`` (then it is replaced whole).
    """
    from . import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    arrays = {"X": index.X}
    state = {name: _flatten(getattr(index, name), name, arrays) for name in _STATE}
    header = {
        "format": FORMAT, "version": VERSION, "fastnn_version": __version__,
        "params": {name: getattr(index, name) for name in _PARAMS},
        "dtype": index.X.dtype.str, "shape": list(index.X.shape),
        "state": state, "arrays": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            header["arrays"][name] = {"file": f"{name}.npy", "dtype": a.dtype.str,
                                      "shape": list(a.shape), "blake2b": checksum(a)}
        with open(tmp / _HEADER, "w") as f:
            json.dump(header, f, indent=1)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "index")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_header(path):
    hp = path / _HEADER
    if not hp.is_file():
        raise ValueError(f"{path} is not a saved fastnn index: no {_HEADER} in it")
    try:
        with open(hp) as f:
            header = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{hp}: not a readable JSON header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{hp}: not a fastnn index header (format "
                         f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: index format version {header.get('version')!r}; this "
                         f"fastnn reads version {VERSION} (save it again with this version)")
    return header


def _load_array(path, name, meta, mmap_mode, verify):
    fp = path / meta["file"]
    if not fp.is_file():
        raise ValueError(f"{fp}: missing (the index header lists it)")
    try:
        a = np.load(fp, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{fp}: cannot read it as a .npy array ({exc}); truncated or "
                         "not an array file") from None
    if a.dtype.str != meta["dtype"] or list(a.shape) != list(meta["shape"]):
        raise ValueError(f"{fp}: dtype {a.dtype.str} shape {list(a.shape)}, but the header "
                         f"says dtype {meta['dtype']} shape {meta['shape']}")
    if verify and checksum(a) != meta["blake2b"]:
        raise ValueError(f"{fp}: checksum mismatch: the file was altered or damaged since "
                         "it was saved")
    return a


def load(cls, path, mmap_mode="r", verify=True):
    """The index saved in ``path`` (see the module docstring).

    ``mmap_mode``: ``'r'`` (default: read-only memory maps), ``'c'``
    (copy-on-write maps: writable arrays, pages shared until written) or
    None (read into memory). ``verify``: check every array's checksum.
    """
    if mmap_mode not in (None, "r", "c"):
        raise ValueError(f"mmap_mode must be 'r', 'c' or None, got {mmap_mode!r}")
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no saved index there (expected a folder)")
    header = _read_header(path)
    metas = header.get("arrays", {})
    if "X" not in metas:
        raise ValueError(f"{path / _HEADER}: lists no data array X")
    arrays = {name: _load_array(path, name, meta, mmap_mode, verify)
              for name, meta in metas.items()}
    X = arrays["X"]
    if X.dtype.str != header["dtype"] or list(X.shape) != header["shape"]:
        raise ValueError(f"{path}: the data array does not match the header's dtype and shape")
    index = cls.__new__(cls)
    from .neighbors import _kernel_families
    index.__dict__.update(header["params"])
    index.X = X
    for name, desc in header["state"].items():
        setattr(index, name, _unflatten(desc, arrays))
    index._faiss = None
    index.stats_ = {}
    index._adopt_kernel_families()
    return index
