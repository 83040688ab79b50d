"""An on-disk cache of the LLVM IR kernels' machine code (``amx``).

numba caches the kernels it compiles (``cache=True``); the tile and int8
kernels of ``amx`` are LLVM IR compiled by llvmlite, which has no cache of
its own, so every process compiled them again, two or more per search (the
self-test's width and the data's; times in docs/benchmarks.md).
Their object code is kept here instead, where numba keeps its own:
``$NUMBA_CACHE_DIR/fastnn_ir`` when that is set, else the package's
``kernels/__pycache__`` when it is writable, else the user-wide cache
(``$XDG_CACHE_HOME/fastnn`` or ``~/.cache/fastnn``).

An entry is named after a hash of everything that decides its machine code:
the IR text, the target features it was built for, the host CPU's name and
features, and the llvmlite and LLVM versions; a different machine, CPU or
upgrade misses and compiles. Entries are written to a temporary file and
renamed (concurrent processes never see half a file) and carry the SHA-256
of their object code, checked on load (LLVM would abort the process on a
damaged object file): a damaged entry, or a cache that cannot be read or
written, is skipped and the kernel compiles as before.
"""

import hashlib
import os
import tempfile

_SUBDIR = "fastnn_ir"
_DIGEST_BYTES = 32       # an entry: the SHA-256 of the object code, then the code
_state = {}          # "dir": the chosen folder (or None), "loads" / "stores": counts


def _writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def cache_dir():
    """The folder entries go to (None: nowhere writable), chosen once."""
    if "dir" not in _state:
        numba_dir = os.environ.get("NUMBA_CACHE_DIR")
        if numba_dir:
            candidates = [os.path.join(numba_dir, _SUBDIR)]
        else:
            user = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache")
            candidates = [os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "__pycache__"),
                          os.path.join(user, "fastnn")]
        _state["dir"] = next((d for d in candidates if _writable(d)), None)
    return _state["dir"]


def entry_key(name, ir_text, target_features):
    """The file name of the kernel ``name`` built from ``ir_text``."""
    import llvmlite
    import llvmlite.binding as ll

    h = hashlib.sha256()
    for part in (ir_text, target_features, ll.get_host_cpu_name(),
                 ll.get_host_cpu_features().flatten(), llvmlite.__version__,
                 ".".join(map(str, ll.llvm_version_info))):
        h.update(part.encode())
        h.update(b"\0")
    return f"{name}-{h.hexdigest()[:24]}.o"


def load(key):
    """The object code stored under ``key``, or None."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, key), "rb") as f:
            entry = f.read()
    except OSError:
        return None
    digest, data = entry[:_DIGEST_BYTES], entry[_DIGEST_BYTES:]
    if not data or hashlib.sha256(data).digest() != digest:
        return None
    _state["loads"] = _state.get("loads", 0) + 1
    return data


def store(key, data):
    """Keep ``data`` under ``key`` (silently not, where that fails)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".o")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(hashlib.sha256(data).digest())
                f.write(data)
            os.replace(tmp, os.path.join(folder, key))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return
    _state["stores"] = _state.get("stores", 0) + 1


def counts():
    """``(loads, stores)`` in this process (for tests and benchmarks)."""
    return _state.get("loads", 0), _state.get("stores", 0)
