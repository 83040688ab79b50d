"""The workshop's keras MLP and LeNet CNN (the optional ``cnn`` extra, which
the test extras install), the CNN embedding's exact search, and the CLI's
``--cnn`` / ``--space cnn`` / ``--features``."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn import kneighbors
from fastnn.cli import main

os.environ.setdefault("KERAS_BACKEND", "jax")        # (as fastnn.cnn does)
keras = pytest.importorskip("keras", reason="the cnn extra (keras 3) is not installed")


def _reference_knn(Q, X, k):
    """Exact neighbours by numpy: float64 squared distances, (distance,
    index) order."""
    Q64, X64 = Q.astype(np.float64), X.astype(np.float64)
    D = ((Q64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=2)
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), D.shape), D), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(D, order, 1)), order


@pytest.fixture(scope="module")
def tiny_cifar():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 300)
    return x[:240], y[:240], x[240:], y[240:]


def test_lenet_one_epoch_embedding_and_its_exact_search(tiny_cifar):
    from fastnn import cnn
    xtr, ytr, xte, yte = tiny_cifar
    lines = []
    model, history = cnn.train("lenet", xtr, ytr, xte, yte, 10, epochs=1, progress=lines.append)
    assert len(lines) == 1 and "lenet epoch 1/1" in lines[0]
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert [layer.name for layer in model.layers][-2] == cnn.EMBEDDING_LAYER
    emb = cnn.embed(model, xte)
    assert emb.shape == (60, 84) and emb.dtype == np.float32
    # the embedding is the 84-unit layer's output (relu: non-negative)
    assert (emb >= 0).all()
    pred = cnn.predict_classes(model, xte)
    assert pred.shape == (60,) and set(pred) <= set(range(10))
    d, i = kneighbors(emb, emb, 5)
    rd, ri = _reference_knn(emb, emb, 5)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(d, rd, rtol=1e-12, atol=1e-12)


def test_mlp_builds_the_workshop_layers():
    from fastnn import cnn
    m = cnn.build_model("mlp", (32, 32, 3), 10)
    units = [layer.units for layer in m.layers if hasattr(layer, "units")]
    assert units == [512, 120, 84, 10]
    lenet = cnn.build_model("lenet", (32, 32, 3), 10)
    filters = [layer.filters for layer in lenet.layers if hasattr(layer, "filters")]
    assert filters == [6, 16]
    with pytest.raises(ValueError, match="'mlp' or 'lenet'"):
        cnn.build_model("resnet", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="at least 10x10"):
        cnn.build_model("lenet", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="epochs"):
        cnn.train("mlp", np.zeros((4, 8, 8), np.uint8), np.zeros(4, int),
                  np.zeros((2, 8, 8), np.uint8), np.zeros(2, int), 10, epochs=0)


def test_report_cnn_rows_models_and_figures(tmp_path, capsys):
    out = tmp_path / "out.json"
    figs = tmp_path / "figs"
    models = tmp_path / "models"
    rc = main(["report", "--cnn", "--epochs", "1", "--train-size", "400", "--test-size", "120",
               "--json", str(out), "--figures", str(figs), "--model-dir", str(models),
               "--quiet"])
    assert rc == 0
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["rows"]}
    for name in ("MLP (keras)", "CNN LeNet"):
        assert 0.0 <= rows[name]["accuracy"] <= 1.0 and rows[name]["fit_s"] > 0
        assert rows[name]["epochs"] == 1
    for f in ("training_mlp.png", "training_lenet.png", "distance_heatmap_cnn.png",
              "similar_cnn.png"):
        assert (figs / f).stat().st_size > 1000, f
    assert sorted(p.name for p in models.iterdir()) == [
        "digits-400-120-lenet-1ep.keras", "digits-400-120-mlp-1ep.keras"]
    # similar --space cnn reuses the saved LeNet (same data and epochs)
    sim = tmp_path / "sim.json"
    rc = main(["similar", "--space", "cnn", "--epochs", "1", "--train-size", "400",
               "--test-size", "120", "--model-dir", str(models), "--query", "1", "5",
               "-k", "3", "--out", str(tmp_path / "s.png"), "--heatmap",
               str(tmp_path / "h.png"), "--json", str(sim)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "using the LeNet saved in" in err
    got = json.loads(sim.read_text())
    assert [q["query"] for q in got["queries"]] == [1, 5]
    assert all(len(q["similar"]) == 3 and len(q["dissimilar"]) == 3 for q in got["queries"])
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_similar_features_file_equals_the_reference_search(tmp_path, capsys):
    rng = np.random.default_rng(1)
    feats = rng.random((450, 16)).astype(np.float32)      # digits: 450 test images
    path = tmp_path / "emb.npy"
    np.save(path, feats)
    sim = tmp_path / "sim.json"
    assert main(["similar", "--features", str(path), "--query", "3", "7", "-k", "4",
                 "--out", "", "--json", str(sim), "--quiet"]) == 0
    got = json.loads(sim.read_text())
    _, ref = _reference_knn(feats[[3, 7]], feats, 5)
    for q, r in zip(got["queries"], ref):
        assert [s["index"] for s in q["similar"]] == [j for j in r if j != q["query"]][:4]


@pytest.mark.parametrize("content, match", [
    (np.zeros((450,)), "2-D"),
    (np.zeros((449, 8)), "449 rows, but the test set has 450"),
    (np.array([["a"] * 4] * 450), "numbers"),
    (np.full((450, 4), np.nan), "NaN"),
    (None, "cannot read"),
])
def test_similar_features_bad_file_exits_2(tmp_path, capsys, content, match):
    path = tmp_path / "bad.npy"
    if content is None:
        path.write_bytes(b"not an npy file")
    else:
        np.save(path, content)
    assert main(["similar", "--features", str(path), "--out", "", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnn: error:") and match in err, err


def test_without_the_extra_a_one_line_message_and_exit_2(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["keras"] = None          # as if the extra were not installed
        from fastnn.cli import main
        sys.exit(main(["report", "--cnn", "--quiet"]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path)))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[cnn]"' in lines[0], res.stderr
    assert res.stdout == ""


def test_training_is_reproducible_with_the_fixed_seed(tiny_cifar):
    """Same data, same epochs: the same losses and the same embedding (JAX
    on the CPU, one machine)."""
    from fastnn import cnn
    xtr, ytr, xte, yte = tiny_cifar
    runs = [cnn.train("lenet", xtr, ytr, xte, yte, 10, epochs=1) for _ in range(2)]
    assert runs[0][1]["loss"] == runs[1][1]["loss"]
    np.testing.assert_array_equal(cnn.embed(runs[0][0], xte), cnn.embed(runs[1][0], xte))
