"""The first run after installing: lazy imports, one compiled specialization
per kernel and data kind, numba's cache reused by the next process, and
``fastnn warmup``.

Each check runs fresh Python processes with their own ``NUMBA_CACHE_DIR``
(other tests' compilations do not count).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Runs the report's calls (the digits report: HOG of uint8 images, 1-NN on
# uint8 pixels and on float32 HOG features) and prints, per numba
# dispatcher of fastnn.kernels, its compiled signatures and cache misses.
_REPORT_CALLS = textwrap.dedent("""
    import json, sys
    from fastnn.cli import main
    assert main(["report", "--quiet"]) == 0
    import numba
    from fastnn.kernels import amx, cluster, distances, hog, manhattan, projection, pruned
    out = {}
    for mod in (cluster, distances, hog, manhattan, projection, pruned):
        for name in dir(mod):
            d = getattr(mod, name)
            if isinstance(d, numba.core.registry.CPUDispatcher) and d.signatures:
                out[mod.__name__ + "." + name] = dict(
                    signatures=[str(s) for s in d.signatures],
                    misses=sum(d.stats.cache_misses.values()),
                    cache_path=d.stats.cache_path)
    print("JSON" + json.dumps(out))
""")


def _run(code, cache_dir, extra_env=None, cwd=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env.update(extra_env or {})
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=900, cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _install_into(target):
    """``pip install`` (not editable) of this checkout into the folder ``target``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target), root],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return target


def _kernels(res):
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("JSON"))
    return json.loads(line[4:])


def test_import_loads_no_heavy_library(tmp_path):
    code = textwrap.dedent("""
        import sys, fastnn
        heavy = ("numba", "sklearn", "scipy", "matplotlib", "faiss", "dask", "PIL", "tqdm")
        print([m for m in heavy if m in sys.modules])
        fastnn.hog
        print(sorted(m for m in ("sklearn", "faiss", "matplotlib", "dask", "PIL", "tqdm")
                     if m in sys.modules))
    """)
    lines = _run(code, tmp_path).stdout.split("\n")
    assert lines[0] == "[]", lines[0]
    assert lines[1] == "[]", lines[1]          # hog pays for numba only


def test_lazy_public_names_resolve():
    import fastnn
    for name in fastnn.__all__:
        assert getattr(fastnn, name) is not None
    assert set(fastnn.__all__) <= set(dir(fastnn))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastnn.nope


@pytest.mark.slow
def test_report_compiles_one_specialization_per_kernel_and_reuses_the_cache(tmp_path):
    """A cold digits report compiles every HOG kernel once (uint8 images,
    float64 and float32 outputs alike) and each search kernel once per
    index dtype (uint8 pixels, float32 HOG features); its batches are small
    ('auto' takes brute force: none of the pruned search's kernels
    compiles); a second process loads them all from the cache (no
    misses)."""
    cold = _kernels(_run(_REPORT_CALLS, tmp_path))
    assert cold, "no kernel ran"
    for name, info in cold.items():
        n = len(info["signatures"])
        limit = 1 if ".hog." in name else 2
        assert n <= limit, f"{name}: {n} specializations\n" + "\n".join(info["signatures"])
        if n == 2:
            # the two must differ by the data's dtype, not by layout or a literal
            a, b = info["signatures"]
            assert ("uint8" in a) != ("uint8" in b), f"{name}:\n{a}\n{b}"
    assert len(cold["fastnn.kernels.hog.hog_batch_lut"]["signatures"]) == 1
    assert not [k for k in cold if ".pruned." in k], sorted(cold)
    warm = _kernels(_run(_REPORT_CALLS, tmp_path))
    # (a kernel loaded from the cache does not compile the helpers it calls:
    # the warm process lists the kernels the report calls, a subset)
    assert set(warm) <= set(cold)
    for entry in ("hog.hog_batch_lut", "distances.rerank_parallel",
                  "distances.merge_tile_serial"):
        assert f"fastnn.kernels.{entry}" in warm, sorted(warm)
    missed = {k: v["misses"] for k, v in warm.items() if v["misses"]}
    assert not missed, f"compiled again in a warm process: {missed}"


@pytest.mark.slow
def test_cache_works_for_a_non_editable_install(tmp_path):
    """``pip install`` (not editable) into a target folder: the kernels run
    from there, their cache goes where numba puts it for that install, and
    a second process compiles nothing."""
    target = _install_into(tmp_path / "site")
    code = textwrap.dedent("""
        import numpy as np, fastnn, json
        assert "site" in fastnn.__file__, fastnn.__file__
        fastnn.hog(np.zeros((2, 32, 32, 3), np.uint8), channel_axis=-1)
        from fastnn.kernels import hog
        s = hog.hog_batch_lut.stats
        print("JSON" + json.dumps(dict(misses=sum(s.cache_misses.values()),
                                       hits=sum(s.cache_hits.values()))))
    """)
    env = {"PYTHONPATH": str(target)}
    cache = tmp_path / "cache"
    first = _kernels(_run(code, cache, env, cwd=str(tmp_path)))
    second = _kernels(_run(code, cache, env, cwd=str(tmp_path)))
    assert first["misses"] == 1 and second["misses"] == 0 and second["hits"] == 1


@pytest.mark.slow
def test_warmup_fills_the_cache_for_later_processes(tmp_path):
    """``fastnn warmup hog-uint8 search-uint8`` (two worker processes), then a
    process that uses those kernels compiles nothing; an unknown job is a
    clear error with exit status 2."""
    res = _run("import sys; from fastnn.cli import main; "
               "sys.exit(main(['warmup', '--quiet', 'hog-uint8', 'search-uint8']))", tmp_path)
    assert res.returncode == 0
    code = textwrap.dedent("""
        import json
        from fastnn.compile import run_job, cold_jobs
        print("COLD", cold_jobs(["hog-uint8", "search-uint8", "search-float32"]))
        run_job("hog-uint8"); run_job("search-uint8")
        from fastnn.kernels import hog, pruned
        print("JSON" + json.dumps(dict(
            hog=sum(hog.hog_batch_lut.stats.cache_misses.values()),
            scan=sum(pruned.scan_collect.stats.cache_misses.values()),
            block=sum(pruned.pruned_block.stats.cache_misses.values()))))
    """)
    out = _run(code, tmp_path)
    cold_line = next(ln for ln in out.stdout.splitlines() if ln.startswith("COLD"))
    # (the check is per dtype: the uint8 search's kernels do not make the
    # float32 one warm)
    assert cold_line == "COLD ['search-float32']", cold_line
    assert _kernels(out) == dict(hog=0, scan=0, block=0)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    bad = subprocess.run([sys.executable, "-m", "fastnn.compile", "no-such-job"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown warmup job" in bad.stderr


@pytest.mark.slow
def test_search_kernels_compile_once_for_uint8_float32_and_float64(tmp_path):
    """The pruned search's large kernels take float rows as byte views:
    searches of uint8, float32 and float64 indexes compile each of them
    once (an int16 index, which they take as it is, adds one), no kernel is
    compiled for a constant argument (numba's Literal types), and every
    answer equals sklearn's brute force."""
    code = textwrap.dedent("""
        import json
        import numpy as np
        from sklearn.neighbors import NearestNeighbors
        from fastnn.compile import _rows
        from fastnn.neighbors import NearestNeighborsIndex
        from fastnn.kernels import pruned
        counts = []
        for dtype in ("uint8", "float32", "float64", "int16"):
            X = _rows("uint8" if dtype == "int16" else dtype, 8192 + 64, 48, 5).astype(dtype)
            Q = X[::200] + (X[1::200] if dtype != "uint8" else 0)
            index = NearestNeighborsIndex(X, backend="pruned")
            d, i = index.kneighbors(Q, 5)
            assert index.stats_["backend"] == "pruned"
            ref = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(X.astype(np.float64))
            rd, ri = ref.kneighbors(Q.astype(np.float64))
            np.testing.assert_allclose(d, rd, rtol=1e-6, atol=1e-6)
            # (the radius search's kernels: for the constant-argument check)
            index.radius_neighbors(Q[:5], float(d[:5, -1].max()))
            counts.append([len(f.signatures) for f in (pruned.scan_collect, pruned.scan_sparse,
                                                       pruned.pruned_block)])
        # a constant argument makes numba compile a version of its own
        import importlib, pkgutil, numba, fastnn.kernels
        literal = [f"{m.name}.{name}: {s}"
                   for m in pkgutil.iter_modules(fastnn.kernels.__path__)
                   for name, d in vars(importlib.import_module("fastnn.kernels." + m.name)).items()
                   if isinstance(d, numba.core.registry.CPUDispatcher)
                   for s in map(str, d.signatures) if "Literal" in s or "Omitted" in s]
        print("JSON" + json.dumps(dict(counts=counts, literal=literal)))
    """)
    out = _kernels(_run(code, tmp_path))
    assert not out["literal"], "\n".join(out["literal"])
    counts = out["counts"]
    # (scan_sparse runs on the int8 / bfloat16 first stages only)
    scan_collect, scan_sparse, block = zip(*counts)
    assert scan_collect == (1, 1, 1, 2) and block == (1, 1, 1, 2), counts
    assert max(scan_sparse[:3]) <= 1 and scan_sparse[3] <= 2, counts


def test_warmup_job_names_and_aliases():
    """A job's earlier name runs the jobs it was split into; an unknown name
    is refused by name, by the warm-up and by the cache check alike."""
    from fastnn.compile import cold_jobs, checked_jobs
    assert checked_jobs(["brute-float", "hog-uint8"]) == ["brute-float32", "brute-float64",
                                                          "hog-uint8"]
    for check in (checked_jobs, cold_jobs):
        with pytest.raises(ValueError, match="unknown warmup job 'nope'"):
            check(["hog-uint8", "nope"])


def test_filters_ip_job_compiles_its_kernels(tmp_path):
    """The 'filters-ip' warmup job still reaches every route it names (the
    per-query filters' two routes, inner product's two), so its marker
    kernel is cached after it and ``cold_jobs`` calls it warm."""
    code = textwrap.dedent("""
        from fastnn.compile import run_job, cold_jobs
        run_job("filters-ip")
        from fastnn.kernels import dot, subset
        print("COLD", cold_jobs(["filters-ip"]),
              [len(f.signatures) > 0 for f in (subset.topk_of_subsets, subset.allowed_marks,
                                               dot.merge_products, dot.products_of_candidates)])
    """)
    out = _run(code, tmp_path)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("COLD"))
    assert line == "COLD [] [True, True, True, True]"


@pytest.mark.parametrize("switches", [{}, {"FASTNN_AMX": "0"},
                                      {"FASTNN_AMX": "0", "FASTNN_AVX512": "0", "FASTNN_AVX2": "0"}])
def test_radius_job_is_warm_after_it_runs_on_every_path(tmp_path, switches):
    """The 'radius' job compiles different bound kernels per CPU path (BLAS
    float32, bfloat16 tiles, int8 filters); its cache marker is one every
    path compiles, so after the job ``cold_jobs`` calls it warm."""
    code = textwrap.dedent("""
        from fastnn.compile import run_job, cold_jobs
        print("COLD", cold_jobs(["radius"]))
        run_job("radius")
        print("COLD", cold_jobs(["radius"]))
    """)
    out = _run(code, tmp_path, switches)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("COLD")]
    assert lines == ["COLD ['radius']", "COLD []"], out.stdout


def _can_mount_read_only(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    res = subprocess.run(["unshare", "-m", "sh", "-c",
                          f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x"],
                         capture_output=True, timeout=60)
    return res.returncode == 0


@pytest.mark.slow
def test_cache_falls_back_to_the_user_cache_for_a_read_only_install(tmp_path):
    """A read-only site-packages (a bind mount made read-only in a private
    mount namespace; root ignores permission bits): numba cannot write
    beside the sources, uses its user-wide cache (``$XDG_CACHE_HOME``), and a
    second process compiles nothing."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no private read-only mount here (needs unshare -m as root)")
    target = _install_into(tmp_path / "site")
    code = textwrap.dedent("""
        import numpy as np, fastnn, json
        fastnn.hog(np.zeros((2, 32, 32, 3), np.uint8), channel_axis=-1)
        from fastnn.kernels import hog
        s = hog.hog_batch_lut.stats
        print("JSON" + json.dumps(dict(misses=sum(s.cache_misses.values()),
                                       hits=sum(s.cache_hits.values()), path=s.cache_path)))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               HOME=str(tmp_path))
    shell = f"mount --bind -o ro {target} {target} && exec {sys.executable} -c \"$CODE\""
    runs = []
    for _ in range(2):
        r = subprocess.run(["unshare", "-m", "sh", "-c", shell], env=dict(env, CODE=code),
                           capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(_kernels(r))
    assert str(tmp_path / "xdg") in runs[0]["path"], runs[0]["path"]
    in_tree = target / "fastnn" / "kernels" / "__pycache__"
    assert not any(f.endswith((".nbi", ".nbc")) for f in
                   (os.listdir(in_tree) if in_tree.exists() else []))
    assert runs[0]["misses"] == 1 and runs[1]["misses"] == 0 and runs[1]["hits"] == 1
