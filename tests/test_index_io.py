"""Saved indexes: round trips for every backend, dtype and memory-map mode
(the same answers after load), and every damaged or foreign file refused
with a ValueError naming it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import NearestNeighborsIndex
from fastnn.kernels import amx

DTYPES = ["uint8", "int16", "float32", "float64"]


def _data(dtype, n=3000, d=40, seed=0):
    r = np.random.default_rng(seed)
    X = r.random((n, 6)) @ r.random((6, d)) * 200
    Q = X[:30] + r.normal(size=(30, d)) * 5
    X[n // 2] = X[0]                                    # an exact tie
    return np.clip(X, 0, 255).astype(dtype), np.clip(Q, 0, 255).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["auto", "pruned", "brute", "faiss"])
def test_round_trip_same_answers(tmp_path, dtype, backend):
    X, Q = _data(dtype)
    index = NearestNeighborsIndex(X, backend=backend)
    ref = index.kneighbors(Q, 7)
    index.save(tmp_path / "ix")
    for mmap_mode in ("r", "c", None):
        got = NearestNeighborsIndex.load(tmp_path / "ix", mmap_mode=mmap_mode)
        assert got.backend == backend and got.X.dtype == X.dtype
        d, i = got.kneighbors(Q, 7)
        np.testing.assert_array_equal(i, ref[1])
        np.testing.assert_array_equal(d, ref[0])
        np.testing.assert_array_equal(got.kneighbors(Q, 3, farthest=True)[1],
                                      index.kneighbors(Q, 3, farthest=True)[1])
        if mmap_mode is not None:
            assert isinstance(got.X, np.memmap)


def test_round_trip_manhattan_and_the_built_state(tmp_path):
    X, Q = _data("float32")
    l1 = NearestNeighborsIndex(X, metric="manhattan")
    l1.save(tmp_path / "l1")
    np.testing.assert_array_equal(NearestNeighborsIndex.load(tmp_path / "l1").kneighbors(Q, 4)[1],
                                  l1.kneighbors(Q, 4)[1])
    index = NearestNeighborsIndex(X, backend="pruned")
    index.save(tmp_path / "ix")
    header = json.loads((tmp_path / "ix" / "header.json").read_text())
    assert header["format"] == "fastnn-index" and header["version"] == 3
    assert header["shape"] == list(X.shape) and header["dtype"] == X.dtype.str
    # the projection was saved: the loaded index does not rebuild it
    loaded = NearestNeighborsIndex.load(tmp_path / "ix")
    assert loaded.built.projection is not None and loaded.built.layout is not None
    for name, meta in header["arrays"].items():
        assert (tmp_path / "ix" / meta["file"]).is_file(), name
    np.testing.assert_array_equal(loaded.kneighbors(Q, 4)[1], index.kneighbors(Q, 4)[1])


def test_version_1_folder_loads_and_rebuilds(tmp_path):
    """A folder in the first format (its built state under older names)
    loads its data and parameters and rebuilds the rest: same answers."""
    X, Q = _data("float32")
    index = NearestNeighborsIndex(X, backend="pruned")
    index.save(tmp_path / "ix")
    hp = tmp_path / "ix" / "header.json"
    header = json.loads(hp.read_text())
    header["version"] = 1
    header["arrays"] = {"X": header["arrays"]["X"]}
    header["params"].pop("pruned_options")
    header["state"] = {"is_int": {"value": False}, "_absmax": {"value": float(np.abs(X).max())},
                       "_proj": {"value": None}}
    hp.write_text(json.dumps(header))
    loaded = NearestNeighborsIndex.load(tmp_path / "ix")
    assert loaded.built.layout is None
    np.testing.assert_array_equal(loaded.kneighbors(Q, 4)[1], index.kneighbors(Q, 4)[1])
    assert loaded.stats_["backend"] == "pruned"


def test_existing_path_needs_overwrite(tmp_path):
    X, Q = _data("float32")
    a = NearestNeighborsIndex(X)
    a.save(tmp_path / "ix")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        a.save(tmp_path / "ix")
    b = NearestNeighborsIndex(X[:1000])
    b.save(tmp_path / "ix", overwrite=True)
    assert NearestNeighborsIndex.load(tmp_path / "ix").n_samples == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]     # no leftovers


@pytest.fixture()
def saved(tmp_path):
    X, Q = _data("float32")
    NearestNeighborsIndex(X, backend="pruned").save(tmp_path / "ix")
    return tmp_path / "ix"


def test_altered_array_is_refused(saved):
    f = saved / "X.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF                                     # one byte of the data
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="X.npy: checksum mismatch"):
        NearestNeighborsIndex.load(saved)
    NearestNeighborsIndex.load(saved, verify=False)     # trusted: no check


def test_truncated_and_missing_files_are_refused(saved):
    f = saved / "built.layout.keys.npy"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"built.layout.keys.npy: cannot read it as a .npy array"):
        NearestNeighborsIndex.load(saved, verify=False)
    f.unlink()
    with pytest.raises(ValueError, match="built.layout.keys.npy: missing"):
        NearestNeighborsIndex.load(saved)


def test_foreign_headers_versions_and_dtypes_are_refused(saved, tmp_path):
    hp = saved / "header.json"
    header = json.loads(hp.read_text())
    hp.write_text(json.dumps(dict(header, version=4)))
    with pytest.raises(ValueError, match=r"format version 4; this fastnn reads versions \(1, 2, 3\)"):
        NearestNeighborsIndex.load(saved)
    hp.write_text(json.dumps(dict(header, format="faiss")))
    with pytest.raises(ValueError, match="not a fastnn index header"):
        NearestNeighborsIndex.load(saved)
    bad = json.loads(json.dumps(header))
    bad["arrays"]["X"]["dtype"] = "<f8"
    hp.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="X.npy: dtype <f4 .* the header says dtype <f8"):
        NearestNeighborsIndex.load(saved)
    hp.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON header"):
        NearestNeighborsIndex.load(saved)
    with pytest.raises(ValueError, match="no header.json"):
        NearestNeighborsIndex.load(tmp_path)
    with pytest.raises(ValueError, match="no saved index there"):
        NearestNeighborsIndex.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="mmap_mode"):
        NearestNeighborsIndex.load(saved, mmap_mode="w+")


def test_loaded_where_another_kernel_path_runs(saved, tmp_path):
    """Saved with this CPU's kernels, loaded with the tile kernels switched
    off: the projection is rebuilt for the portable path, same answer."""
    X, Q = _data("float32")
    ref = NearestNeighborsIndex.load(saved).kneighbors(Q, 5)
    np.save(tmp_path / "q.npy", Q)
    code = ("import sys, numpy as np; from fastnn import NearestNeighborsIndex as I; "
            "p = sys.argv[1]; ix = I.load(p + '/ix'); d, i = ix.kneighbors(np.load(p + '/q.npy'), 5); "
            "np.save(p + '/i.npy', i); np.save(p + '/d.npy', d); print(ix.stats_['first_stage'])")
    env = dict(os.environ, FASTNN_AMX="0", FASTNN_AVX512="0", FASTNN_AVX2="0", NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code, str(saved.parent)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "blas-float32"
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), ref[1])
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), ref[0])


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("searched_first", [True, False])
@pytest.mark.parametrize("kernels", ["auto", "portable", "int8"])
def test_add_then_search_equals_build_on_all(tmp_path, dtype, searched_first, kernels):
    """Rows added to a built index (its projection, centre, scale and
    centroids kept) give the answers of an index built on all rows (on the
    automatic kernels, the portable ones and the int8 first stage); saved and
    loaded, it keeps its first stage."""
    if kernels == "int8" and not amx.available_int8("avx512"):
        # (on an AVX2 CPU without AMX 'auto' is the int8 first stage: the
        # 'auto' case runs it)
        pytest.skip("no AVX-512 VNNI here: first_stage='int8' would be the 'auto' case again"
                    if amx.available_int8("avx2") else
                    "no int8 kernels here: the int8 first stage cannot run")
    X, Q = _data(dtype, n=12000)
    r = np.random.default_rng(1)
    X[11000:] = np.clip(X[11000:] + r.normal(size=(1000, X.shape[1])) * 40, 0, 255)  # unlike the first rows
    whole = NearestNeighborsIndex(X, backend="pruned")
    ref = whole.kneighbors(Q, 6)
    params = (dict(pruned_options={"first_stage": "int8"}) if kernels == "int8"
              else dict(kernels=kernels))
    part = NearestNeighborsIndex(X[:9000], backend="pruned", **params)
    if searched_first:
        part.kneighbors(Q, 2)                            # the projection is built
        assert part.stats_["clustered"]
    part.add(X[9000:10500]).add(X[10500:])
    assert part.n_samples == 12000
    d, i = part.kneighbors(Q, 6)
    np.testing.assert_array_equal(i, ref[1])
    np.testing.assert_array_equal(d, ref[0])
    assert part.stats_["backend"] == "pruned"
    first_stage = part.stats_["first_stage"]
    assert first_stage == "avx512-int8" or kernels != "int8"
    np.testing.assert_array_equal(part.kneighbors(Q, 6, backend="brute")[1], ref[1])
    part.save(tmp_path / "ix")                           # and it saves and loads as any index
    loaded = NearestNeighborsIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.kneighbors(Q, 6, backend="pruned")[1], ref[1])
    assert loaded.stats_["first_stage"] == first_stage


def test_add_checks_its_rows():
    X, Q = _data("uint8")
    index = NearestNeighborsIndex(X)
    with pytest.raises(ValueError, match="X_new has 3 features, but the index has 40"):
        index.add(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="cannot represent"):
        index.add(np.full((2, 40), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        NearestNeighborsIndex(X.astype(np.float32)).add(np.full((1, 40), np.nan))
    index.add(np.zeros((0, 40), np.uint8))               # nothing to add: unchanged
    assert index.n_samples == len(X)
    index.add(np.full((1, 40), 7.0))                     # representable: cast to uint8
    assert index.n_samples == len(X) + 1 and index.X.dtype == np.uint8
