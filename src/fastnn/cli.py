"""The ``fastnn`` command: the workshop's experiments on real data.

``fastnn report``   the table: random / 1-NN raw / 1-NN HOG / forest raw /
                    forest HOG (MLP with ``--mlp``) with accuracy, macro F1 and
                    times, on the embedded digits (default) or CIFAR-10;
                    ``--reference`` adds skimage + sklearn side by side.
``fastnn similar``  the k most similar and most dissimilar images of chosen
                    queries, as an image grid.
``fastnn fetch``    download the official CIFAR-10 archive (sha256-checked).
``fastnn warmup``   compile the kernels into numba's cache, one process per
                    core (``fastnn.compile``); ``report`` does this by itself
                    for the kernels it needs when the cache is cold.

Errors (missing path, unknown format, corrupt data, bad options) print one
line and exit with status 2.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

WORKSHOP_QUERIES = (1, 6159, 100, 200, 1000, 3268)   # the workshop's similarity examples


class UsageError(ValueError):
    pass


def _metrics(y, p):
    from sklearn.metrics import accuracy_score, f1_score
    return float(accuracy_score(y, p)), float(f1_score(y, p, average="macro"))


def _timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def _show_progress(args):
    return not args.quiet and sys.stderr.isatty()


class _Steps:
    """One tqdm bar over the named steps of a command (silent when quiet or
    when stderr is not a terminal)."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, unit="step", file=sys.stderr,
                            bar_format="{desc:<28}{bar:20}| {n_fmt}/{total_fmt} [{elapsed}]")

    def start(self, name):
        if self.bar is not None:
            self.bar.set_description_str(name)

    def done(self):
        if self.bar is not None:
            self.bar.update(1)

    def write(self, line):
        """A progress line (per-epoch training lines) above the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _load(args):
    from .datasets import default_cifar_path, load_cifar10, load_digits_images
    if args.data in (None, "digits"):
        ds = load_digits_images()
    else:
        path = default_cifar_path() if args.data == "cifar10" else args.data
        if path is None:
            raise FileNotFoundError("CIFAR-10 not found: run `fastnn fetch` or pass --data PATH")
        ds = load_cifar10(path, progress=_show_progress(args))
    for name in ("train_size", "test_size", "epochs"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if getattr(args, "train_size", None):
        ds.x_train, ds.y_train = ds.x_train[:args.train_size], ds.y_train[:args.train_size]
    if getattr(args, "test_size", None):
        ds.x_test, ds.y_test = ds.x_test[:args.test_size], ds.y_test[:args.test_size]
    return ds


def _hog_params(ds):
    """The workshop's ``hog(img)`` defaults for 32x32 images; smaller cells
    and blocks for the 16x16 digits."""
    ca = ds.channel_axis
    if ds.x_train.shape[1] >= 24:
        return dict(channel_axis=ca)
    return dict(pixels_per_cell=(4, 4), cells_per_block=(3, 3), channel_axis=ca)


def _compile_first(args):
    """On a cold numba cache (the first run after installing), compile the
    report's kernels first, in one process per core, and say so."""
    from .compile import REPORT_JOBS, cold_jobs, warmup

    jobs = cold_jobs(REPORT_JOBS)
    if not jobs:
        return
    if not args.quiet:
        print(f"compiling kernels (first run only: {len(jobs)} jobs, one process per core)...",
              file=sys.stderr, flush=True)
    t = time.perf_counter()
    warmup(jobs, progress=_show_progress(args))
    if not args.quiet:
        print(f"compiled in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)


def run_report(args):
    from sklearn.ensemble import RandomForestClassifier

    from .estimators import KNeighborsClassifier
    from .feature import hog

    ds = _load(args)
    _compile_first(args)
    hk = _hog_params(ds)
    xtr = ds.x_train.reshape(len(ds.x_train), -1)
    xte = ds.x_test.reshape(len(ds.x_test), -1)
    if args.cnn:
        _cnn()            # (the missing-extra message before any work)
    n_steps = (6 + 2 * bool(args.mlp) + 3 * bool(args.reference) + bool(args.figures)
               + 2 * bool(args.cnn))
    steps = _Steps(n_steps, _show_progress(args))
    rows = []
    try:
        steps.start("random baseline")
        rng = np.random.default_rng(0)
        p = rng.integers(0, len(ds.class_names), len(ds.y_test))
        acc, f1 = _metrics(ds.y_test, p)
        rows.append(dict(method="random", accuracy=acc, f1=f1, fit_s=0.0, predict_s=0.0))
        steps.done()

        steps.start("HOG features")
        (htr, t_h1) = _timed(hog, ds.x_train, dtype=np.float32, **hk)
        (hte, t_h2) = _timed(hog, ds.x_test, dtype=np.float32, **hk)
        hog_s = t_h1 + t_h2
        steps.done()

        spaces = {"raw": (xtr, xte, 0.0), "HOG": (htr, hte, hog_s)}
        models = {"1-NN": lambda: KNeighborsClassifier(1),
                  "forest": lambda: RandomForestClassifier(n_estimators=100, n_jobs=-1,
                                                           random_state=0)}
        if args.mlp:
            from sklearn.neural_network import MLPClassifier
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            models["MLP"] = lambda: make_pipeline(StandardScaler(), MLPClassifier(
                hidden_layer_sizes=(512,), early_stopping=True, max_iter=100, random_state=0))
        preds = {}
        for model_name, make in models.items():
            for space, (a, b, extra) in spaces.items():
                name = f"{model_name} {space}"
                preds[name] = _scored(steps, rows, name, make(), a, b, ds, extra)

        if args.reference:
            from skimage.feature import hog as sk_hog
            from sklearn.neighbors import KNeighborsClassifier as SkKNN
            steps.start("reference skimage HOG")
            t = time.perf_counter()
            rtr = np.stack([sk_hog(i, **hk) for i in ds.x_train])
            rte = np.stack([sk_hog(i, **hk) for i in ds.x_test])
            ref_hog = time.perf_counter() - t
            steps.done()
            for name, (a, b, extra) in {"1-NN raw": (xtr, xte, 0.0),
                                        "1-NN HOG": (rtr, rte, ref_hog)}.items():
                steps.start(f"reference {name}")
                m, tf = _timed(SkKNN(1).fit, a, ds.y_train)
                pr, tp = _timed(m.predict, b)
                row = next(r for r in rows if r["method"] == name)
                row["ref_s"] = tf + tp + extra
                row["speedup"] = row["ref_s"] / (row["fit_s"] + row["predict_s"])
                row["agreement"] = float((pr == preds[name]).mean())
                steps.done()

        cnn_runs = {}
        if args.cnn:
            for kind, name in (("mlp", "MLP (keras)"), ("lenet", "CNN LeNet")):
                steps.start(name)
                model, history, fit_s = _trained(args, ds, kind, log=steps.write)
                pr, tp = _timed(_cnn().predict_classes, model, ds.x_test)
                acc, f1 = _metrics(ds.y_test, pr)
                rows.append(dict(method=name, accuracy=acc, f1=f1, fit_s=fit_s, predict_s=tp,
                                 epochs=args.epochs))
                cnn_runs[kind] = (model, history)
                steps.done()

        figures = []
        if args.figures:
            steps.start("figures")
            figures = _report_figures(Path(args.figures), ds, hk, htr, hte, preds)
            for kind, (model, history) in cnn_runs.items():
                figures.append(_fg().training_figure(
                    history, Path(args.figures) / f"training_{kind}.png",
                    title=f"{'LeNet CNN' if kind == 'lenet' else 'MLP'}: {args.epochs} epochs "
                          f"({ds.name}, test set as validation)"))
            if "lenet" in cnn_runs:
                feats = _cnn().embed(cnn_runs["lenet"][0], ds.x_test)
                figures += _embedding_figures(ds, feats, Path(args.figures), "cnn")
            steps.done()
    finally:
        steps.close()
    return dict(dataset=ds.name, n_train=len(ds.y_train), n_test=len(ds.y_test), rows=rows,
                figures=[str(f) for f in figures])


def _scored(steps, rows, name, model, a, b, ds, extra_s):
    """Fit ``model`` on ``a``, predict ``b``, append its row (accuracy,
    macro F1, fit seconds plus ``extra_s`` for its features, predict
    seconds) to ``rows``; returns the predictions."""
    steps.start(name)
    m, fit_s = _timed(model.fit, a, ds.y_train)
    pred, predict_s = _timed(m.predict, b)
    acc, f1 = _metrics(ds.y_test, pred)
    rows.append(dict(method=name, accuracy=acc, f1=f1, fit_s=fit_s + extra_s,
                     predict_s=predict_s))
    steps.done()
    return pred


def _cnn():
    """fastnn.cnn with keras imported (MissingExtra, a UsageError, when the
    optional extra is absent)."""
    from . import cnn
    try:
        cnn.require_keras()
    except cnn.MissingExtra as exc:
        raise UsageError(str(exc)) from None
    return cnn


def _fg():
    from . import figures
    return figures


def _dataset_key(ds):
    return f"{ds.name}-{len(ds.y_train)}-{len(ds.y_test)}"


def _trained(args, ds, kind, log=None):
    """The workshop's ``kind`` model trained on ``ds`` for ``args.epochs``
    epochs, saved in the model folder (keras format); returns ``(model,
    history, seconds)``."""
    cnn = _cnn()
    say = (lambda line: None) if args.quiet else (log or cnn.say)
    t = time.perf_counter()
    model, history = cnn.train(kind, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                               len(ds.class_names), epochs=args.epochs, progress=say)
    seconds = time.perf_counter() - t
    path = cnn.model_path(args.model_dir or cnn.default_model_dir(), _dataset_key(ds), kind,
                          args.epochs)
    cnn.save(model, path)
    say(f"{kind} model saved to {path}")
    return model, history, seconds


def _cnn_embedding(args, ds):
    """The LeNet's embedding of the test images: the model ``report --cnn``
    saved for the same data and epochs, or one trained now."""
    cnn = _cnn()
    path = cnn.model_path(args.model_dir or cnn.default_model_dir(), _dataset_key(ds), "lenet",
                          args.epochs)
    if path.is_file():
        model = cnn.load(path)
        if not args.quiet:
            cnn.say(f"using the LeNet saved in {path}")
    else:
        if not args.quiet:
            cnn.say(f"no LeNet saved for {_dataset_key(ds)} and {args.epochs} epochs: "
                    "training one now")
        model = _trained(args, ds, "lenet")[0]
    return cnn.embed(model, ds.x_test)


def _load_features(path, n_images):
    """A user's embedding: a 2-D numeric ``.npy`` with one finite row per test
    image."""
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--features {path}: cannot read it as a .npy array ({exc})") from None
    if feats.ndim != 2:
        raise UsageError(f"--features {path}: expected a 2-D array (one row per test image), "
                         f"got shape {feats.shape}")
    if feats.dtype.kind not in "uif":
        raise UsageError(f"--features {path}: expected numbers, got dtype {feats.dtype}")
    if feats.shape[0] != n_images:
        raise UsageError(f"--features {path}: {feats.shape[0]} rows, but the test set has "
                         f"{n_images} images (one row per test image, in order)")
    if feats.dtype.kind == "f" and not np.isfinite(feats).all():
        raise UsageError(f"--features {path}: contains NaN or infinity")
    return np.ascontiguousarray(feats)


def _embedding_figures(ds, feats, folder, space, queries=None, k=6):
    """The workshop's similarity section on an embedding: the distance heat
    map of the first ten test images and the grid of the most similar and
    most dissimilar images of the queries."""
    from .neighbors import pairwise_distances
    n = min(10, len(feats))
    labels = [f"{i} {ds.class_names[ds.y_test[i]]}" for i in range(n)]
    out = [_fg().distance_heatmap(pairwise_distances(feats[:n]), labels,
                                  folder / f"distance_heatmap_{space}.png",
                                  title=f"Distance ({space} embedding, first {n} test images)")]
    queries = queries or _default_queries(len(ds.y_test))
    near, far = _similar(feats, queries, min(k, len(feats) - 1))
    out.append(_similar_figure(ds, queries, near, far, folder / f"similar_{space}.png",
                               f"{space} space, test set"))
    return out


def _report_figures(folder, ds, hk, htr, hte, preds):
    from . import figures as fg
    folder.mkdir(parents=True, exist_ok=True)
    out = [fg.sample_grid(ds.x_train, ds.y_train, ds.class_names, folder / "samples.png"),
           fg.hog_figure(ds.x_test[0], folder / "hog.png",
                         title=f"test image 0 ({ds.class_names[ds.y_test[0]]})", **hk),
           fg.confusion_figure(ds.y_test, preds["1-NN HOG"], ds.class_names,
                               folder / "confusion_1nn_hog.png",
                               title="1-NN on HOG features: confusion matrix (test set)")]
    queries = _default_queries(len(ds.y_test))[:4]
    near, far = _similar(hte, queries, 5)
    out.append(_similar_figure(ds, queries, near, far, folder / "similar_hog.png",
                               "HOG space, test set"))
    return out


def _default_queries(n):
    q = [i for i in WORKSHOP_QUERIES if i < n]
    return q if len(q) >= 3 else list(range(min(n, 4)))


def _similar(feats, queries, k):
    """k most similar / dissimilar test images of each query, the query excluded."""
    from .neighbors import NearestNeighborsIndex
    from .neighbors.topk import exclude_self
    n = len(feats)
    if not 1 <= k <= n - 1:
        raise UsageError(f"-k must be between 1 and {n - 1} (test images - 1), got {k}")
    bad = [q for q in queries if not 0 <= q < n]
    if bad:
        raise UsageError(f"query index {bad[0]} out of range: the test set has {n} images")
    index = NearestNeighborsIndex(feats)
    Q = feats[np.asarray(queries)]
    out = []
    for farthest in (False, True):
        d, i = index.kneighbors(Q, k + 1, farthest=farthest)
        out.append(exclude_self(d, i, queries, farthest))
    return out


def _similar_figure(ds, queries, near, far, path, space):
    from . import figures as fg
    k = near[1].shape[1]
    return fg.neighbors_grid(ds.x_test[queries], ds.y_test[queries], near, far, ds.x_test,
                             ds.y_test, ds.class_names, path,
                             title=f"{k} most similar | {k} most dissimilar ({space})")


def run_similar(args):
    from .feature import hog
    ds = _load(args)
    queries = args.query if args.query else _default_queries(len(ds.y_test))
    space = args.space
    if args.features:
        feats = _load_features(args.features, len(ds.y_test))
        space = f"features from {Path(args.features).name}"
    elif args.space == "cnn":
        feats = _cnn_embedding(args, ds)
    elif args.space == "hog":
        feats = hog(ds.x_test, dtype=np.float32, **_hog_params(ds))
    else:
        feats = ds.x_test.reshape(len(ds.x_test), -1)
    near, far = _similar(feats, queries, args.k)
    path = heat = None
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        path = _similar_figure(ds, queries, near, far, args.out, f"{space}, test set")
    if args.heatmap:
        from .neighbors import pairwise_distances
        Path(args.heatmap).parent.mkdir(parents=True, exist_ok=True)
        n = min(10, len(feats))
        heat = _fg().distance_heatmap(
            pairwise_distances(feats[:n]), [f"{i} {ds.class_names[ds.y_test[i]]}"
                                            for i in range(n)],
            args.heatmap, title=f"Distance ({space}, first {n} test images)")
    res = []
    for r, q in enumerate(queries):
        res.append(dict(query=int(q), label=ds.class_names[ds.y_test[q]],
                        similar=[dict(index=int(j), label=ds.class_names[ds.y_test[j]],
                                      distance=float(d))
                                 for d, j in zip(near[0][r], near[1][r])],
                        dissimilar=[dict(index=int(j), label=ds.class_names[ds.y_test[j]],
                                         distance=float(d))
                                    for d, j in zip(far[0][r], far[1][r])]))
    return dict(dataset=ds.name, space=space, k=args.k, queries=res,
                figure=str(path) if path else None, heatmap=str(heat) if heat else None)


def _print_table(res):
    print(f"dataset {res['dataset']}: {res['n_train']} train / {res['n_test']} test")
    head = f"{'method':<12}{'accuracy':>9}{'macro F1':>9}{'fit s':>9}{'predict s':>10}"
    ref = any("ref_s" in r for r in res["rows"])
    if ref:
        head += f"{'ref s':>9}{'speed-up':>9}{'agree':>7}"
    print(head)
    for r in res["rows"]:
        line = (f"{r['method']:<12}{r['accuracy']:>9.3f}{r['f1']:>9.3f}{r['fit_s']:>9.2f}"
                f"{r['predict_s']:>10.2f}")
        if ref and "ref_s" in r:
            line += f"{r['ref_s']:>9.2f}{r['speedup']:>8.1f}x{r['agreement']:>7.3f}"
        print(line)
    for f in res.get("figures", []):
        print(f"figure: {f}")


def _print_similar(res):
    print(f"dataset {res['dataset']}, {res['space']} space, k={res['k']} (test set)")
    for q in res["queries"]:
        near = ", ".join(f"{s['index']}:{s['label']}({s['distance']:.1f})" for s in q["similar"])
        far = ", ".join(f"{s['index']}:{s['label']}({s['distance']:.1f})"
                        for s in q["dissimilar"])
        print(f"query {q['query']} ({q['label']})\n  similar:    {near}\n  dissimilar: {far}")
    if res["figure"]:
        print(f"figure: {res['figure']}")
    if res.get("heatmap"):
        print(f"heat map: {res['heatmap']}")


def _add_data_args(p):
    p.add_argument("--data", default=None, help="digits (default), cifar10, or a PATH "
                   "(batches folder, cifar-10-python.tar.gz, image tree or its .tar.gz)")
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-size", type=int, default=None, help="use the first N test images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_cnn_args(p):
    from .cnn import DEFAULT_EPOCHS
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"training epochs of the keras models (default {DEFAULT_EPOCHS}: "
                        "about 2 minutes for both on CIFAR-10 with 2 cores; the workshop "
                        "ran 100 and 200)")
    p.add_argument("--model-dir", default=None, metavar="DIR",
                   help="where trained keras models are kept (default $FASTNN_MODELS or "
                        "~/.cache/fastnn/models)")


def _parser():
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    rp = sub.add_parser("report", help="the workshop's table (accuracy, macro F1, times)")
    _add_data_args(rp)
    rp.add_argument("--reference", action="store_true",
                    help="also run skimage HOG + sklearn k-NN: speed-up and agreement")
    rp.add_argument("--mlp", action="store_true", help="add MLP rows (sklearn MLPClassifier)")
    rp.add_argument("--json", default=None, metavar="FILE", help="write the results to FILE")
    rp.add_argument("--figures", default=None, metavar="DIR",
                    help="write PNG figures (samples, HOG, confusion, similar) to DIR")
    rp.add_argument("--cnn", action="store_true",
                    help="add the workshop's keras MLP and LeNet CNN rows (needs "
                         "pip install -e \".[cnn]\")")
    _add_cnn_args(rp)
    sp = sub.add_parser("similar", help="most similar and most dissimilar images of queries")
    _add_data_args(sp)
    sp.add_argument("--query", type=int, nargs="+", default=None,
                    help="test-set indices (default: the workshop's 1 6159 100 200 1000 3268)")
    sp.add_argument("-k", type=int, default=5, help="images per side (default 5)")
    sp.add_argument("--space", choices=("hog", "raw", "cnn"), default="hog",
                    help="hog (default), raw pixels, or cnn: the LeNet's 84-unit embedding "
                         "(the model report --cnn saved for the same data, or trained now)")
    sp.add_argument("--features", default=None, metavar="FILE.npy",
                    help="search your own embedding instead: one row per test image")
    sp.add_argument("--heatmap", default=None, metavar="PNG",
                    help="also draw the distance heat map of the first ten test images")
    _add_cnn_args(sp)
    sp.add_argument("--out", default="similar.png", help="PNG file (default similar.png)")
    sp.add_argument("--json", default=None, metavar="FILE")
    sub.add_parser("warmup", help="compile the kernels into numba's cache, one process per "
                   "core (fastnn warmup --help)", add_help=False)
    fp = sub.add_parser("fetch", help="download the official CIFAR-10 archive")
    fp.add_argument("--data-home", default=None,
                    help="folder (default $FASTNN_DATA or ~/.cache/fastnn/data)")
    fp.add_argument("--quiet", action="store_true")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "warmup":
        from .compile import main as warmup_main
        return warmup_main(argv[1:])
    parser = _parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["report"] + argv
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            from .datasets import default_data_home, fetch_cifar10
            ds = fetch_cifar10(args.data_home, progress=_show_progress(args))
            print(f"CIFAR-10: {len(ds.y_train)} train / {len(ds.y_test)} test images in "
                  f"{default_data_home(args.data_home) / 'cifar-10-batches-py'}")
            return 0
        if args.cmd == "similar":
            res = run_similar(args)
            _print_similar(res)
        else:
            res = run_report(args)
            _print_table(res)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
    except (OSError, ValueError, TypeError) as exc:
        print(f"fastnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
