"""Datasets: fetch_cifar10 against a local HTTP server (never the internet),
refusal of bad archives, and the loaders' layouts."""

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from fastnn.datasets import fetch_cifar10, load_cifar10


def _official_archive(rng, n_per_batch=6, n_test=4):
    """A small archive in the official cifar-10-python.tar.gz layout."""
    buf = io.BytesIO()
    arrays = {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + \
                [("test_batch", n_test)]:
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            arrays[name] = (data, labels)
            add(name, {b"data": data, b"labels": labels})
    return buf.getvalue(), arrays


def _bad_archive(name, kind="file"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """Serve files from a folder on 127.0.0.1 (loopback only)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(home):
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def test_fetch_downloads_checks_and_loads(server, tmp_path):
    root, base = server
    data, arrays = _official_archive(np.random.default_rng(0))
    (root / "cifar.tar.gz").write_bytes(data)
    home = tmp_path / "home"
    ds = fetch_cifar10(home, url=f"{base}/cifar.tar.gz", sha256=hashlib.sha256(data).hexdigest())
    train = np.concatenate([arrays[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.x_train, train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ds.y_test, arrays["test_batch"][1])
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (30, 32, 32, 3)
    assert ds.class_names == [f"c{i}" for i in range(10)]
    assert _leftovers(home) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    # a second call uses the extracted copy (the server is not needed)
    (root / "cifar.tar.gz").unlink()
    again = fetch_cifar10(home, url=f"{base}/cifar.tar.gz")
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_fetch_sha256_mismatch_leaves_nothing(server, tmp_path):
    root, base = server
    data, _ = _official_archive(np.random.default_rng(1))
    (root / "cifar.tar.gz").write_bytes(data)
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        fetch_cifar10(home, url=f"{base}/cifar.tar.gz", sha256="0" * 64)
    assert _leftovers(home) == []


def test_fetch_truncated_archive_is_refused(server, tmp_path):
    root, base = server
    data, _ = _official_archive(np.random.default_rng(2))
    cut = data[: len(data) // 2]
    (root / "cut.tar.gz").write_bytes(cut)
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="corrupt or truncated"):
        fetch_cifar10(home, url=f"{base}/cut.tar.gz", sha256=hashlib.sha256(cut).hexdigest())
    # the (verified) archive may stay for inspection; no partial extraction does
    assert "cifar-10-batches-py" not in _leftovers(home)
    assert not [n for n in _leftovers(home) if n.startswith(".extract") or n.endswith(".part")]


@pytest.mark.parametrize("name,kind", [("../evil.txt", "file"), ("/tmp/evil.txt", "file"),
                                       ("cifar-10-batches-py/../../evil.txt", "file"),
                                       ("cifar-10-batches-py/link", "symlink")])
def test_fetch_refuses_unsafe_members(server, tmp_path, name, kind):
    root, base = server
    data = _bad_archive(name, kind)
    (root / "bad.tar.gz").write_bytes(data)
    home = tmp_path / "deep" / "home"
    with pytest.raises(ValueError, match="unsafe path|link or special"):
        fetch_cifar10(home, url=f"{base}/bad.tar.gz", sha256=hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert "cifar-10-batches-py" not in _leftovers(home)


def test_fetch_missing_url_is_a_clear_error(server, tmp_path):
    _, base = server
    with pytest.raises((ConnectionError, ValueError), match="download of"):
        fetch_cifar10(tmp_path / "h", url=f"{base}/nothing-here.tar.gz")
    assert _leftovers(tmp_path / "h") == []


def test_load_batches_folder_and_tar(tmp_path):
    data, arrays = _official_archive(np.random.default_rng(3))
    arc = tmp_path / "cifar-10-python.tar.gz"
    arc.write_bytes(data)
    from_tar = load_cifar10(arc, cache=False)
    with tarfile.open(arc) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    from_dir = load_cifar10(tmp_path / "x" / "cifar-10-batches-py")
    np.testing.assert_array_equal(from_tar.x_train, from_dir.x_train)
    np.testing.assert_array_equal(from_tar.y_train,
                                  np.concatenate([arrays[f"data_batch_{i}"][1] for i in range(1, 6)]))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_cifar10(tmp_path / "missing")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_cifar10(junk)
    d = tmp_path / "batches"
    d.mkdir()
    (d / "batches.meta").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt CIFAR-10 batch"):
        load_cifar10(d)
