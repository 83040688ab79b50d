"""The ``fastnn`` command on the embedded digits: table, JSON, figures,
similar images, progress policy and one-line errors with exit status 2."""

import json
import pickle

import numpy as np
import pytest

from fastnn.cli import main


def test_report_digits_json_and_figures(tmp_path, capsys):
    out = tmp_path / "r.json"
    figs = tmp_path / "figs"
    assert main(["report", "--json", str(out), "--figures", str(figs), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""                        # quiet: no progress, no chatter
    res = json.loads(out.read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["random", "1-NN raw", "1-NN HOG", "forest raw", "forest HOG"]
    acc = {r["method"]: r["accuracy"] for r in res["rows"]}
    assert acc["1-NN raw"] > 0.9 and acc["random"] < 0.3
    assert "1-NN raw" in printed.out and "macro F1" in printed.out
    # the 1-NN raw row equals sklearn's classifier on the same split
    from sklearn.neighbors import KNeighborsClassifier

    from fastnn.datasets import load_digits_images
    ds = load_digits_images()
    sk = KNeighborsClassifier(1).fit(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train)
    assert acc["1-NN raw"] == pytest.approx(
        sk.score(ds.x_test.reshape(len(ds.x_test), -1), ds.y_test))
    import matplotlib.image as mpimg
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["confusion_1nn_hog.png", "hog.png", "samples.png", "similar_hog.png"]
    for p in figs.iterdir():
        img = mpimg.imread(p)
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and img.std() > 0.05


def test_report_reference_columns(capsys):
    assert main(["report", "--reference", "--quiet", "--train-size", "400",
                 "--test-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "agree" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("1-NN raw"))
    assert line.split()[-1] == "1.000"             # identical predictions to sklearn


def test_similar_command(tmp_path, capsys):
    js = tmp_path / "s.json"
    png = tmp_path / "s.png"
    assert main(["similar", "--query", "3", "7", "-k", "3", "--space", "raw",
                 "--out", str(png), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert png.is_file() and png.stat().st_size > 10_000
    from fastnn.datasets import load_digits_images
    ds = load_digits_images()
    X = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float64)
    for q in res["queries"]:
        d = np.sqrt(((X - X[q["query"]]) ** 2).sum(1))
        d[q["query"]] = np.nan                       # the query itself is excluded
        order = np.lexsort((np.arange(len(d)), np.nan_to_num(d, nan=np.inf)))
        far = np.lexsort((np.arange(len(d)), -np.nan_to_num(d, nan=-np.inf)))
        assert [s["index"] for s in q["similar"]] == order[:3].tolist()
        assert [s["index"] for s in q["dissimilar"]] == far[:3].tolist()
        assert q["similar"][0]["distance"] == pytest.approx(d[order[0]])


@pytest.mark.parametrize("argv,msg", [
    (["report", "--data", "/no/such/path"], "no such file"),
    (["similar", "--query", "99999", "--quiet"], "out of range"),
    (["similar", "-k", "0", "--quiet"], "-k must be"),
    (["report", "--train-size", "0", "--quiet"], "--train-size"),
])
def test_errors_exit_2_with_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnn: error:") and msg in err and err.count("\n") == 1


def test_unknown_format_and_corrupt_batch(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    assert main(["report", "--data", str(junk), "--quiet"]) == 2
    assert "unknown dataset format" in capsys.readouterr().err
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    (d / "data_batch_1").write_bytes(b"truncated")
    assert main(["report", "--data", str(d), "--quiet"]) == 2
    assert "corrupt CIFAR-10 batch" in capsys.readouterr().err


def test_unknown_option_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["similar", "--space", "fourier"])
    assert exc.value.code == 2
