"""fastnn.hog against skimage.feature.hog on float gradients: float images
and ``transform_sqrt``, where orientations can lie exactly on a bin edge.

A square-root image puts gradients on 60 and 120 degrees in exact
arithmetic (``sqrt(12) - sqrt(0)`` against ``sqrt(4) - sqrt(0)``): the
computed angle is then within an ulp of the edge, and its bin depends on
how ``arctan2`` rounds. numpy may run SIMD code for ``arctan2`` that differs
from libm in the last bit, so fastnn takes numpy's own ufunc; these tests
demand bit equality with skimage, also with numpy's SIMD dispatch narrowed.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from skimage import data
from skimage.feature import hog as sk_hog

from fastnn import hog

NORMS = ["L1", "L1-sqrt", "L2", "L2-Hys"]


def _reference(images, **kw):
    return np.stack([sk_hog(im, **kw) for im in images])


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.mark.parametrize("case", ["uint8-rgb", "float64-0-255", "float64-0-1", "float32-0-1",
                                  "grey-uint8", "grey-float64-0-1"])
def test_astronaut_transform_sqrt_bitwise(astronaut, case):
    """The cases of the issue (1,933 - 2,450 values differed before)."""
    img, kw = {
        "uint8-rgb": (astronaut, dict(channel_axis=-1)),
        "float64-0-255": (astronaut.astype(np.float64), dict(channel_axis=-1)),
        "float64-0-1": (astronaut / 255.0, dict(channel_axis=-1)),
        "float32-0-1": ((astronaut / 255.0).astype(np.float32), dict(channel_axis=-1)),
        "grey-uint8": (astronaut[..., 0], {}),
        "grey-float64-0-1": (astronaut[..., 0] / 255.0, {}),
    }[case]
    ref = sk_hog(img, transform_sqrt=True, **kw)
    got = hog(img, transform_sqrt=True, **kw)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_orientations_on_bin_edges_are_binned_as_numpy_bins_them():
    """A grey square-root image whose gradients lie exactly on 60 degrees in
    exact arithmetic (g_row = sqrt(12), g_col = sqrt(4)): whichever side of
    the edge numpy's arctan2 rounds to, fastnn follows it."""
    img = np.zeros((16, 16), np.uint8)
    img[6, 5] = 12          # g_row at (5, 5): sqrt(12) - sqrt(0) (rows 6 and 4)
    img[5, 6] = 4           # g_col at (5, 5): sqrt(4) - sqrt(0) (cols 6 and 4)
    g_row, g_col = math.sqrt(12.0), math.sqrt(4.0)
    angle = float(np.rad2deg(np.arctan2(g_row, g_col)) % 180)
    assert abs(angle - 60.0) < 1e-12            # on the edge (up to rounding)
    kw = dict(orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2),
              transform_sqrt=True)
    np.testing.assert_array_equal(hog(img, **kw), sk_hog(img, **kw))


def test_float_batch_same_as_one_by_one_and_thread_independent(astronaut):
    """The float path's sub-batches and threads do not change a value."""
    rng = np.random.default_rng(3)
    crops = np.stack([astronaut[r:r + 64, c:c + 64] for r, c in
                      rng.integers(0, 448, (40, 2))]).astype(np.float32) / 255
    kw = dict(channel_axis=-1, transform_sqrt=True)
    ref = _reference(crops, **kw)
    for n_jobs, chunk in ((1, None), (2, 7), (None, 1)):
        np.testing.assert_array_equal(hog(crops, n_jobs=n_jobs, chunk_size=chunk, **kw), ref)


def _smooth_field(rng, shape, dtype, scale):
    """A natural-like image: white noise blurred at a random scale (cumulative
    sums of a coarse grid, bilinearly upsampled), then quantised for uint8."""
    rows, cols = shape[:2]
    step = int(rng.integers(2, 17))
    coarse = rng.random((rows // step + 2, cols // step + 2) + shape[2:])
    r = np.linspace(0, coarse.shape[0] - 1.001, rows)
    c = np.linspace(0, coarse.shape[1] - 1.001, cols)
    r0, c0 = r.astype(int), c.astype(int)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    if coarse.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    img = ((1 - fr) * (1 - fc) * coarse[r0][:, c0] + fr * (1 - fc) * coarse[r0 + 1][:, c0]
           + (1 - fr) * fc * coarse[r0][:, c0 + 1] + fr * fc * coarse[r0 + 1][:, c0 + 1])
    if np.dtype(dtype) == np.uint8:
        return np.clip(img * 255, 0, 255).astype(np.uint8)
    return (img * scale).astype(dtype)


@st.composite
def natural_case(draw):
    return dict(rows=draw(st.integers(128, 512)), cols=draw(st.integers(128, 512)),
                colour=draw(st.booleans()),
                dtype=draw(st.sampled_from(["uint8", "float32", "float64"])),
                scale=draw(st.sampled_from([1.0, 255.0])),
                norm=draw(st.sampled_from(NORMS)), sqrt=draw(st.booleans()),
                photo=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)),
                ppc=draw(st.sampled_from([(8, 8), (6, 9), (16, 16)])),
                orientations=draw(st.sampled_from([9, 7, 12])))


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(natural_case())
def test_natural_images_bitwise_property(case):
    """Larger natural-like images: smooth random fields, or crops of a photo
    (the astronaut) in another dtype; every block norm, with and without
    transform_sqrt."""
    rng = np.random.default_rng(case["seed"])
    shape = (case["rows"], case["cols"]) + ((3,) if case["colour"] else ())
    if case["photo"]:
        src = data.astronaut()
        r, c = rng.integers(0, 513 - case["rows"]), rng.integers(0, 513 - case["cols"])
        img = src[r:r + case["rows"], c:c + case["cols"]]
        img = img if case["colour"] else img[..., int(rng.integers(0, 3))]
        if case["dtype"] != "uint8":
            img = (img / (255.0 / case["scale"])).astype(case["dtype"])
    else:
        img = _smooth_field(rng, shape, case["dtype"], case["scale"])
    kw = dict(orientations=case["orientations"], pixels_per_cell=case["ppc"],
              cells_per_block=(2, 2), block_norm=case["norm"],
              transform_sqrt=case["sqrt"], channel_axis=-1 if case["colour"] else None)
    ref = sk_hog(img, **kw)
    got = hog(img, **kw)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_empty_batch_gives_empty_result():
    """numpy's and Dask's convention: 0 images in, 0 rows out, right shape
    and dtype; the parameters are still checked."""
    x = np.zeros((0, 32, 32, 3), np.uint8)
    one = hog(np.zeros((1, 32, 32, 3), np.uint8), channel_axis=-1)
    out = hog(x, channel_axis=-1)
    assert out.shape == (0, one.shape[1]) and out.dtype == one.dtype
    blocks = hog(x, channel_axis=-1, feature_vector=False)
    assert blocks.shape == (0,) + hog(np.zeros((1, 32, 32, 3), np.uint8), channel_axis=-1,
                                      feature_vector=False).shape[1:]
    f, pictures = hog(x.astype(np.float32), channel_axis=-1, visualize=True)
    assert f.dtype == np.float32 and f.shape == (0, one.shape[1])
    assert pictures.shape == (0, 32, 32) and pictures.dtype == np.float32
    with pytest.raises(ValueError, match="too small"):
        hog(np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="block_norm"):
        hog(x, channel_axis=-1, block_norm="L3")


_NARROWED_SCRIPT = textwrap.dedent("""
    import json, math
    import numpy as np
    from skimage import data
    from skimage.feature import hog as sk_hog
    from fastnn import hog
    img = data.astronaut()
    cases = [(img, dict(channel_axis=-1)), (img / 255.0, dict(channel_axis=-1)),
             (img[..., 0], {}), ((img / 255.0).astype(np.float32), dict(channel_axis=-1))]
    differ = [int((hog(x, transform_sqrt=True, **kw)
                   != sk_hog(x, transform_sqrt=True, **kw)).sum()) for x, kw in cases]
    r = np.random.default_rng(0)
    a, b = r.standard_normal(20000), r.standard_normal(20000)
    libm = np.array([math.atan2(x, y) for x, y in zip(a, b)])
    print(json.dumps(dict(differ=differ, atan2_vs_libm=int((np.arctan2(a, b) != libm).sum()))))
""")


def _run_narrowed(disable):
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=disable)
    return subprocess.run([sys.executable, "-c", _NARROWED_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_parity_with_numpy_simd_dispatch_narrowed():
    """The parity holds whichever SIMD code numpy runs: a fresh process with
    numpy's AVX-512 dispatch disabled (``NPY_DISABLE_CPU_FEATURES``; numpy
    >= 2.4 names it X86_V4, older ones AVX512_SKX) gives bit equality too.
    Where the CPU has no AVX-512 the narrowed run is the default one."""
    for disable in ("X86_V4", "AVX512_SKX"):
        res = _run_narrowed(disable)
        if res.returncode == 0:
            break
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["differ"] == [0, 0, 0, 0], out
