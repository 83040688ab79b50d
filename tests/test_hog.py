"""fastnn.hog against the real skimage.feature.hog, image by image.

Precision: float64 output within 1e-7 absolute, float32 within 1e-5 (as
skimage's own tests); on uint8 input the tests demand bit equality.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from skimage.feature import hog as sk_hog

from fastnn import hog

NORMS = ["L1", "L1-sqrt", "L2", "L2-Hys"]


def _tol(dtype):
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-7


def _reference(images, **kw):
    return np.stack([sk_hog(im, **kw) for im in images])


@st.composite
def hog_case(draw):
    orientations = draw(st.integers(1, 13))
    ppc = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    cpb = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    rows = draw(st.integers(ppc[0] * cpb[0], ppc[0] * cpb[0] + 12))
    cols = draw(st.integers(ppc[1] * cpb[1], ppc[1] * cpb[1] + 12))
    nch = draw(st.sampled_from([None, 1, 2, 3, 4]))
    dtype = draw(st.sampled_from(["uint8", "int16", "int32", "float16", "float32", "float64"]))
    n = draw(st.integers(1, 3))
    norm = draw(st.sampled_from(NORMS))
    sqrt = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(orientations=orientations, ppc=ppc, cpb=cpb, rows=rows, cols=cols,
                nch=nch, dtype=dtype, n=n, norm=norm, sqrt=sqrt, seed=seed)


def _images(case):
    r = np.random.default_rng(case["seed"])
    shape = (case["n"], case["rows"], case["cols"]) + (() if case["nch"] is None else (case["nch"],))
    dt = np.dtype(case["dtype"])
    if dt.kind == "u":
        x = r.integers(0, 256, shape).astype(dt)
    elif dt.kind == "i":
        x = r.integers(-300, 300, shape).astype(dt)
        if case["sqrt"]:
            x = np.abs(x)
    else:
        x = (r.random(shape) * r.choice([1.0, 255.0])).astype(dt)
    return x


@given(hog_case())
def test_hog_matches_skimage_property(case):
    x = _images(case)
    kw = dict(orientations=case["orientations"], pixels_per_cell=case["ppc"],
              cells_per_block=case["cpb"], block_norm=case["norm"],
              transform_sqrt=case["sqrt"],
              channel_axis=None if case["nch"] is None else -1)
    got = hog(x, **kw)
    ref = _reference(x, **kw)
    assert got.dtype == ref.dtype
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=_tol(ref.dtype))
    if x.dtype == np.uint8:
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_hog_every_norm_bitwise_on_random_colour(norm, dtype, rng):
    x = rng.integers(0, 256, (6, 40, 36, 3)).astype(dtype)
    if dtype != "uint8":
        x /= 255
    got = hog(x, block_norm=norm, channel_axis=-1)
    ref = _reference(x, block_norm=norm, channel_axis=-1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=_tol(ref.dtype))
    assert np.array_equal(got, ref)


def test_single_image_same_as_skimage(rng):
    im = rng.integers(0, 256, (33, 29, 3), dtype=np.uint8)
    got = hog(im, pixels_per_cell=(4, 5), cells_per_block=(2, 2), channel_axis=-1)
    ref = sk_hog(im, pixels_per_cell=(4, 5), cells_per_block=(2, 2), channel_axis=-1)
    assert got.shape == ref.shape and np.array_equal(got, ref)
    grey = im[..., 0]
    assert np.array_equal(hog(grey), sk_hog(grey))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_channel_axis_counts_one_image(axis, rng):
    im = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    moved = np.moveaxis(im, -1, axis)
    batch = np.stack([moved, moved[::-1].copy()])
    got = hog(batch, pixels_per_cell=(6, 6), cells_per_block=(2, 2), channel_axis=axis)
    ref = _reference(batch, pixels_per_cell=(6, 6), cells_per_block=(2, 2), channel_axis=axis)
    assert np.array_equal(got, ref)


def test_feature_vector_false_shape(rng):
    x = rng.integers(0, 256, (3, 32, 40, 3), dtype=np.uint8)
    got = hog(x, feature_vector=False, channel_axis=-1)
    ref = np.stack([sk_hog(i, feature_vector=False, channel_axis=-1) for i in x])
    assert got.shape == ref.shape == (3, 2, 3, 3, 3, 9)
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("ppc", [(8, 8), (5, 7), (3, 3)])
def test_visualize_equals_skimage(dtype, ppc, rng):
    x = rng.integers(0, 256, (3, 30, 35, 3)).astype(dtype)
    feats, pics = hog(x, pixels_per_cell=ppc, cells_per_block=(2, 2), visualize=True,
                      channel_axis=-1)
    for i in range(3):
        rf, rp = sk_hog(x[i], pixels_per_cell=ppc, cells_per_block=(2, 2), visualize=True,
                        channel_axis=-1)
        assert np.array_equal(feats[i], rf)
        assert pics[i].dtype == rp.dtype
        np.testing.assert_allclose(pics[i], rp, rtol=0, atol=_tol(rp.dtype))


def test_float32_output_dtype_option(rng):
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    got = hog(x, channel_axis=-1, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(x, channel_axis=-1), rtol=0, atol=1e-5)


def test_independent_of_threads_and_chunks(rng):
    x = rng.random((37, 24, 24, 3)).astype(np.float32)
    a = hog(x, pixels_per_cell=(6, 6), cells_per_block=(2, 2), channel_axis=-1, n_jobs=1)
    b = hog(x, pixels_per_cell=(6, 6), cells_per_block=(2, 2), channel_axis=-1, n_jobs=2,
            chunk_size=5)
    assert np.array_equal(a, b)


def test_integer_range_shift_path(rng):
    # int32 values far from 0 but spanning <= 255 use the table path
    x = (rng.integers(0, 200, (3, 24, 24)) + 1_000_000).astype(np.int32)
    assert np.array_equal(hog(x, pixels_per_cell=(6, 6)),
                          _reference(x, pixels_per_cell=(6, 6)))


def test_non_contiguous_and_readonly(rng):
    x = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)[:, ::2, ::2]
    x.setflags(write=False)
    assert np.array_equal(hog(x, channel_axis=-1), _reference(x, channel_axis=-1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_norm="L3"), "block normalization"),
    (dict(pixels_per_cell=(0, 8)), "pixels_per_cell"),
    (dict(cells_per_block=(2, -1)), "cells_per_block"),
    (dict(orientations=0), "orientations"),
    (dict(pixels_per_cell=(40, 40)), "too small"),
])
def test_bad_parameters_raise_value_error(kwargs, match, rng):
    x = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match=match):
        hog(x, **kwargs)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="ndim"):
        hog(np.zeros((2, 2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="channel_axis"):
        hog(np.zeros((32, 32), np.uint8), channel_axis=-1)
    with pytest.raises(TypeError, match="numeric"):
        hog(np.zeros((2, 32, 32), dtype=bool))
    with pytest.raises(TypeError, match="numeric"):
        hog(np.zeros((2, 32, 32), dtype=complex))
    with pytest.raises(TypeError, match="numeric"):
        hog(np.array([["a"]], dtype=object))
    x = rng.random((2, 32, 32))
    x[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hog(x)
    with pytest.raises(ValueError, match="non-negative"):
        hog(-rng.random((2, 32, 32)), transform_sqrt=True)
    with pytest.raises(ValueError, match="zero-size"):
        hog(np.zeros((2, 0, 32), np.uint8))
    # skimage raises for the same too-small image
    with pytest.raises(ValueError):
        sk_hog(np.zeros((20, 20)))
    with pytest.raises(ValueError, match="too small"):
        hog(np.zeros((20, 20)))


@pytest.mark.cifar
def test_all_cifar10_images_bitwise(cifar):
    """All 60,000 real images: fastnn's batch hog equals skimage's per image."""
    x = np.concatenate([cifar.x_train, cifar.x_test])
    got = hog(x, channel_axis=-1)
    # skimage over all 60k takes ~15 s; compare every image
    ref = _reference(x, channel_axis=-1)
    assert got.shape == (60000, 324)
    assert np.array_equal(got, ref), f"max diff {np.abs(got - ref).max()}"


@pytest.mark.cifar
def test_all_cifar10_images_transform_sqrt_bitwise(cifar):
    """All 60,000 real images with transform_sqrt=True (the float path:
    26 of the first 2,000 test images differed when libm's atan2 binned
    the square-root gradients that sit on bin edges)."""
    x = np.concatenate([cifar.x_train, cifar.x_test])
    got = hog(x, channel_axis=-1, transform_sqrt=True)
    ref = _reference(x, channel_axis=-1, transform_sqrt=True)
    bad = np.flatnonzero((got != ref).any(axis=1))
    assert bad.size == 0, f"{bad.size} images differ, first {bad[:10]}"


@pytest.mark.parametrize("pairs", [((17, -52), (28, -47)), ((28, -47), (17, -52)),
                                   ((17, -52), (17, -52)), ((-52, 17), (47, -28))])
def test_colour_choice_on_equal_squared_gradients(pairs):
    """Two channels whose gradients have the same squared norm (2993) but
    float64 magnitudes a last bit apart (hypot(28, -47) != hypot(17, -52)):
    skimage's argmax over the float64 magnitudes decides, not the order."""
    assert np.hypot(28, -47) != np.hypot(17, -52)
    img = np.full((16, 16, 3), 100, np.uint8)
    r, c = 5, 6
    for ch, (gr, gc) in enumerate(pairs):
        img[r + 1, c, ch] = 100 + max(gr, 0)
        img[r - 1, c, ch] = 100 - min(gr, 0)
        img[r, c + 1, ch] = 100 + max(gc, 0)
        img[r, c - 1, ch] = 100 - min(gc, 0)
    for ch, (gr, gc) in enumerate(pairs):                  # the pixel's gradients
        assert int(img[r + 1, c, ch]) - int(img[r - 1, c, ch]) == gr
        assert int(img[r, c + 1, ch]) - int(img[r, c - 1, ch]) == gc
    kw = dict(orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2), channel_axis=-1)
    np.testing.assert_array_equal(hog(img[None], **kw)[0], sk_hog(img, **kw))
