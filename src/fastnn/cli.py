"""The ``fastnn`` command: the workshop's experiment table on real data.

``fastnn report`` runs random / 1-NN raw / 1-NN HOG / forest raw / forest HOG
on the embedded digits (default) or CIFAR-10 (``--data cifar10|PATH``);
``--reference`` also runs skimage + sklearn and adds speed-up and agreement.
"""

import argparse
import json
import sys
import time

import numpy as np


def _metrics(y, p):
    from sklearn.metrics import accuracy_score, f1_score
    return float(accuracy_score(y, p)), float(f1_score(y, p, average="macro"))


def _timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def _load(args):
    from .datasets import default_cifar_path, load_cifar10, load_digits_images
    if args.data in (None, "digits"):
        ds = load_digits_images()
    else:
        path = default_cifar_path() if args.data == "cifar10" else args.data
        if path is None:
            raise FileNotFoundError("CIFAR-10 not found: pass --data PATH")
        ds = load_cifar10(path, progress=not args.quiet and sys.stderr.isatty())
    if args.train_size:
        ds.x_train, ds.y_train = ds.x_train[:args.train_size], ds.y_train[:args.train_size]
    if args.test_size:
        ds.x_test, ds.y_test = ds.x_test[:args.test_size], ds.y_test[:args.test_size]
    return ds


def run_report(args):
    from sklearn.ensemble import RandomForestClassifier

    from .estimators import KNeighborsClassifier
    from .feature import hog

    ds = _load(args)
    ca = ds.channel_axis
    ppc = (8, 8) if ds.x_train.shape[1] >= 24 else (4, 4)
    cpb = (2, 2) if ds.x_train.shape[1] >= 24 else (3, 3)
    hk = dict(pixels_per_cell=ppc, cells_per_block=cpb, channel_axis=ca)
    if ds.x_train.shape[1] == 32:
        hk = dict(channel_axis=ca)                 # the workshop's hog(src) defaults
    xtr = ds.x_train.reshape(len(ds.x_train), -1)
    xte = ds.x_test.reshape(len(ds.x_test), -1)
    rows = []
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))

    rng = np.random.default_rng(0)
    p = rng.integers(0, len(ds.class_names), len(ds.y_test))
    rows.append(dict(method="random", accuracy=_metrics(ds.y_test, p)[0],
                     f1=_metrics(ds.y_test, p)[1], fit_s=0.0, predict_s=0.0))

    say("hog features ...")
    (htr, t_h1) = _timed(hog, ds.x_train, dtype=np.float32, **hk)
    (hte, t_h2) = _timed(hog, ds.x_test, dtype=np.float32, **hk)
    hog_s = t_h1 + t_h2

    preds = {}
    for name, (a, b, extra) in {"1-NN raw": (xtr, xte, 0.0), "1-NN HOG": (htr, hte, hog_s)}.items():
        say(name, "...")
        m, tf = _timed(KNeighborsClassifier(1).fit, a, ds.y_train)
        pr, tp = _timed(m.predict, b)
        preds[name] = pr
        acc, f1 = _metrics(ds.y_test, pr)
        rows.append(dict(method=name, accuracy=acc, f1=f1, fit_s=tf + extra, predict_s=tp))
    for name, (a, b, extra) in {"forest raw": (xtr, xte, 0.0), "forest HOG": (htr, hte, hog_s)}.items():
        say(name, "...")
        m, tf = _timed(RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0).fit,
                       a, ds.y_train)
        pr, tp = _timed(m.predict, b)
        acc, f1 = _metrics(ds.y_test, pr)
        rows.append(dict(method=name, accuracy=acc, f1=f1, fit_s=tf + extra, predict_s=tp))

    if args.reference:
        from skimage.feature import hog as sk_hog
        from sklearn.neighbors import KNeighborsClassifier as SkKNN
        say("reference skimage hog ...")
        t = time.perf_counter()
        rtr = np.stack([sk_hog(i, **hk) for i in ds.x_train])
        rte = np.stack([sk_hog(i, **hk) for i in ds.x_test])
        ref_hog = time.perf_counter() - t
        for name, (a, b, extra) in {"1-NN raw": (xtr, xte, 0.0),
                                    "1-NN HOG": (rtr, rte, ref_hog)}.items():
            say("reference", name, "...")
            m, tf = _timed(SkKNN(1).fit, a, ds.y_train)
            pr, tp = _timed(m.predict, b)
            row = next(r for r in rows if r["method"] == name)
            row["ref_s"] = tf + tp + extra
            row["speedup"] = row["ref_s"] / (row["fit_s"] + row["predict_s"])
            row["agreement"] = float((pr == preds[name]).mean())
    return dict(dataset=ds.name, n_train=len(ds.y_train), n_test=len(ds.y_test), rows=rows)


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    rp = sub.add_parser("report", help="the workshop's table (accuracy, macro F1, times)")
    rp.add_argument("--data", default=None, help="digits (default), cifar10, or a PATH")
    rp.add_argument("--reference", action="store_true", help="also run skimage + sklearn")
    rp.add_argument("--train-size", type=int, default=None)
    rp.add_argument("--test-size", type=int, default=None)
    rp.add_argument("--json", default=None, help="write the results to FILE")
    rp.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd is None:
        args = parser.parse_args(["report"] + (argv or []))
    try:
        res = run_report(args)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"fastnn: error: {exc}", file=sys.stderr)
        return 2
    _print_table(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
