"""Saving and loading a ``NearestNeighborsIndex``: a folder of ``.npy`` files
and a JSON header, no pickle.

Format (version 3)::

    PATH/
      header.json           format name and version, fastnn version, the
                            index's parameters, dtype and shape of the data,
                            every scalar of its built state, and per array:
                            file, dtype, shape and a blake2b-128 checksum
      X.npy                 the data (uint8 stays uint8)
      removed.npy           (when rows were removed) one bool per row
      <name>.npy            each built array (projection, layout, packed
                            stage-1 rows, ...), e.g. built.layout.keys.npy

The built state is ``index.built`` (``neighbors.state.BuiltState``): its
typed records (``Projection``, ``IndexLayout``, ...) are saved field by
field under their class name. Version 3 adds ``removed.npy`` (version 2
files load as indexes without removed rows; a fastnn that reads version 2
only refuses a version 3 file instead of bringing removed rows back).
Version 1 (fastnn before the engine became a
package) is still read: its data and parameters load, and its built state
(held under older names) is rebuilt on first use.

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

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "fastnn-index"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_HEADER = "header.json"
_CHUNK = 1 << 24        # bytes hashed per update (a memory map is read in pieces)

# the constructor parameters saved (the rest of the index is its data and
# its built state)
_PARAMS = ("metric", "backend", "n_components", "n_jobs", "random_state", "kernels", "p")


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
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"record": type(value).__name__,
                "fields": {f.name: _flatten(getattr(value, f.name), f"{key}.{f.name}", arrays)
                           for f in dataclasses.fields(value)}}
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


def _unflatten(desc, arrays, records):
    if "record" in desc:
        cls = records.get(desc["record"])
        if cls is None:
            raise ValueError(f"unknown record type {desc['record']!r} in the header")
        return cls(**{k: _unflatten(v, arrays, records) for k, v in desc["fields"].items()})
    if "array" in desc:
        return arrays[desc["array"]]
    if "dict" in desc:
        return {k: _unflatten(v, arrays, records) for k, v in desc["dict"].items()}
    if "tuple" in desc:
        return tuple(_unflatten(v, arrays, records) for v in desc["tuple"])
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
    if index.removed is not None:
        arrays["removed"] = index.removed
    state = {name: _flatten(value, f"built.{name}", arrays)
             for name, value in index.built.saved_fields().items()}
    state["is_int"] = {"value": bool(index.is_int)}
    state["families"] = {"value": [index.built.tile_family, index.built.int8_family]}
    params = {name: getattr(index, name) for name in _PARAMS}
    params["pruned_options"] = index.pruned_options.as_dict()
    header = {
        "format": FORMAT, "version": VERSION, "fastnn_version": __version__,
        "params": params,
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
    if header.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path}: index format version {header.get('version')!r}; this "
                         f"fastnn reads versions {READABLE_VERSIONS} (save it again with this "
                         "version)")
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
    from .neighbors.pruned.options import PrunedOptions
    from .neighbors.state import RECORDS, SAVED, BuiltState
    index = cls.__new__(cls)
    params = dict(header["params"])
    index.pruned_options = PrunedOptions.coerce(params.pop("pruned_options", None))
    # ('p' joined in version 3: older headers have none)
    index.__dict__.update({name: params.get(name) for name in _PARAMS})
    index.X = X
    index.removed = arrays.get("removed")
    if index.removed is not None and (index.removed.dtype != np.bool_
                                      or index.removed.shape != (X.shape[0],)):
        raise ValueError(f"{path}: removed.npy must hold one bool per row of X")
    state = header["state"]
    index.is_int = bool(_unflatten(state["is_int"], arrays, RECORDS))
    built = BuiltState()
    if header["version"] == 1:
        # (older names: keep the data's magnitude, rebuild the rest)
        built.absmax = _unflatten(state.get("_absmax", {"value": None}), arrays, RECORDS)
    else:
        for name in SAVED:
            setattr(built, name, _unflatten(state[name], arrays, RECORDS))
        built.tile_family, built.int8_family = _unflatten(state["families"], arrays, RECORDS)
    index.built = built
    index.stats_ = {}
    index.adopt_kernel_families()
    return index
