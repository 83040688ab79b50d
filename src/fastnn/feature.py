"""Batch HOG feature extraction, equal to ``skimage.feature.hog`` per image."""

import numbers
from functools import lru_cache

import numpy as np

from ._threads import resolve_n_jobs, run_in_parts
from .kernels import hog as _k

__all__ = ["hog", "hog_output_shape", "BLOCK_NORMS"]

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
_DEFAULT_CHUNK = 4096


def _pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of positive integers, got {value!r}") from None
    out = []
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            if isinstance(v, numbers.Real) and float(v).is_integer():
                v = int(v)
            else:
                raise TypeError(f"{name} must be a pair of positive integers, got {value!r}")
        if v <= 0:
            raise ValueError(f"{name} must be a pair of positive integers, got {value!r}")
        out.append(int(v))
    return tuple(out)


def _float_dtype(dtype):
    """skimage's rule: float16/float32 -> float32, everything else -> float64."""
    return np.dtype(np.float32) if dtype.char in "ef" else np.dtype(np.float64)


def _check_params(orientations, pixels_per_cell, cells_per_block, block_norm):
    if isinstance(orientations, bool) or not isinstance(orientations, numbers.Integral):
        raise TypeError(f"orientations must be a positive integer, got {orientations!r}")
    if orientations < 1:
        raise ValueError(f"orientations must be a positive integer, got {orientations!r}")
    if orientations > 32767:
        raise ValueError(f"orientations={orientations} is too large (at most 32767)")
    ppc = _pair(pixels_per_cell, "pixels_per_cell")
    cpb = _pair(cells_per_block, "cells_per_block")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(
            f"Selected block normalization method is invalid: block_norm={block_norm!r}; "
            f"expected one of {', '.join(BLOCK_NORMS)}"
        )
    return int(orientations), ppc, cpb


def hog_output_shape(image_shape, orientations=9, pixels_per_cell=(8, 8),
                     cells_per_block=(3, 3)):
    """Shape of one image's HOG before ``ravel``.

    Parameters
    ----------
    image_shape : tuple of int
        ``(rows, cols)`` of the image (channels do not change the shape).

    Returns
    -------
    shape : tuple
        ``(n_blocks_row, n_blocks_col, b_row, b_col, orientations)``.

    Raises
    ------
    ValueError
        If the image is too small for one block.
    """
    orientations, (c_row, c_col), (b_row, b_col) = _check_params(
        orientations, pixels_per_cell, cells_per_block, "L2-Hys")
    rows, cols = int(image_shape[0]), int(image_shape[1])
    nbr = rows // c_row - b_row + 1
    nbc = cols // c_col - b_col + 1
    if nbr <= 0 or nbc <= 0:
        raise ValueError(
            "The input image is too small given the values of pixels_per_cell and "
            f"cells_per_block (image {rows}x{cols}, pixels_per_cell {(c_row, c_col)}, "
            f"cells_per_block {(b_row, b_col)}). It should have at least: "
            f"{b_row * c_row} rows and {b_col * c_col} cols."
        )
    return (nbr, nbc, b_row, b_col, orientations)


@lru_cache(maxsize=8)
def _lut(orientations):
    bins, mag = _k.build_lut(orientations)
    bins.setflags(write=False)
    mag.setflags(write=False)
    return bins, mag


@lru_cache(maxsize=16)
def _line_plan(rows, cols, c_row, c_col, orientations):
    """Line segments of skimage's HOG picture, in skimage's exact arithmetic.

    Bresenham lines are translation invariant, so each distinct endpoint delta
    is drawn once (with ``skimage.draw.line``) and translated by the kernel.
    """
    from skimage.draw import line

    n_cells_row, n_cells_col = rows // c_row, cols // c_col
    radius = min(c_row, c_col) // 2 - 1
    orientations_arr = np.arange(orientations)
    mid = np.pi * (orientations_arr + 0.5) / orientations
    dr_arr = radius * np.sin(mid)
    dc_arr = radius * np.cos(mid)
    cr = (np.arange(n_cells_row) * c_row + c_row // 2)[:, None, None].astype(np.float64)
    cc = (np.arange(n_cells_col) * c_col + c_col // 2)[None, :, None].astype(np.float64)
    r0 = np.trunc(cr - dc_arr).astype(np.int64)
    c0 = np.trunc(cc + dr_arr).astype(np.int64)
    r1 = np.trunc(cr + dc_arr).astype(np.int64)
    c1 = np.trunc(cc - dr_arr).astype(np.int64)
    r0, c0, r1, c1 = np.broadcast_arrays(r0, c0, r1, c1)
    if max(r0.max(), r1.max()) >= rows or max(c0.max(), c1.max()) >= cols:
        raise ValueError("visualize=True cannot draw cells this small "
                         f"(pixels_per_cell={(c_row, c_col)}): lines leave the image")
    deltas = np.stack([(r1 - r0).ravel(), (c1 - c0).ravel()], axis=1)
    uniq, inverse = np.unique(deltas, axis=0, return_inverse=True)
    line_r, line_c, line_start = [], [], [0]
    for dr, dc in uniq:
        rr, cc_ = line(0, 0, int(dr), int(dc))
        line_r.append(rr)
        line_c.append(cc_)
        line_start.append(line_start[-1] + len(rr))
    starts = np.ascontiguousarray(np.stack([r0, c0], axis=-1))
    pattern = np.ascontiguousarray(inverse.reshape(r0.shape).astype(np.int64))
    return (starts, pattern, np.concatenate(line_r).astype(np.int64),
            np.concatenate(line_c).astype(np.int64), np.asarray(line_start, np.int64))


def _as_batch(images, channel_axis):
    """Return (batch (n, rows, cols, ch) view, single_image flag)."""
    if channel_axis is None:
        if images.ndim == 2:
            return images[None, :, :, None], True
        if images.ndim == 3:
            return images[:, :, :, None], False
        raise ValueError(
            f"Only images with two spatial dimensions are supported: got an array of "
            f"ndim={images.ndim} with channel_axis=None. Pass a grey image (rows, cols), a "
            "batch of them (n, rows, cols), or set channel_axis for colour images."
        )
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}")
    if images.ndim == 3:
        single = True
        ax = int(channel_axis)
        if not -3 <= ax <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D image")
        return np.moveaxis(images, ax, -1)[None], single
    if images.ndim == 4:
        ax = int(channel_axis)
        if not -3 <= ax <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D image "
                             "(it counts the axes of one image, not of the batch)")
        ax = ax + 1 if ax >= 0 else ax
        return np.moveaxis(images, ax, -1), False
    raise ValueError(
        f"With channel_axis={channel_axis} the input must be one colour image (3-D) or a "
        f"batch of them (4-D); got ndim={images.ndim}. A 2-D grey image takes "
        "channel_axis=None."
    )


# pixels per sub-batch of the float path (each of its four float64 arrays
# stays near 8 MB: in cache-friendly pieces, spread over threads)
_FLOAT_PIXELS_PER_PART = 1 << 20


# images per float64 piece when the output is float32 (the kernels write
# float64 only: one compiled specialization; a 2.6 MB piece stays in cache
# for the cast)
_FLOAT32_PIECE = 1024


def _float64_pieces(out, lo, hi):
    """``(s, e, target)`` over ``[lo, hi)``: ``target`` is ``out[s:e]`` itself
    for float64 output, else a float64 buffer the caller casts into it."""
    if out.dtype == np.float64:
        yield lo, hi, out[lo:hi]
        return
    buf = np.empty((min(_FLOAT32_PIECE, hi - lo),) + out.shape[1:], np.float64)
    for s in range(lo, hi, _FLOAT32_PIECE):
        e = min(hi, s + _FLOAT32_PIECE)
        yield s, e, buf[:e - s]


def _hog_lut_chunk(images, c_row, c_col, b_row, b_col, method, lut_bin, lut_mag, out, hists,
                   keep_hist, n_threads):
    """The integer path for a contiguous uint8 chunk ``(n, rows, cols,
    channels)``: contiguous parts of the batch, one thread each, each a
    serial ``nogil`` kernel (``hog_batch_lut``)."""
    hist_shape = hists.shape[1:]
    block_length = b_row * b_col * hist_shape[2]

    def part(lo, hi):
        scratch = _k.hog_scratch(hist_shape, block_length, images.shape[1:])
        for s, e, target in _float64_pieces(out, lo, hi):
            _k.hog_batch_lut(images[s:e], c_row, c_col, b_row, b_col, method, lut_bin, lut_mag,
                             target, hists[s:e] if keep_hist else hists, keep_hist, scratch)
            if out.dtype != np.float64:
                out[s:e] = target

    run_in_parts(part, images.shape[0], n_threads)


def _hog_float_chunk(images, cell_area, c_row, c_col, b_row, b_col, method, edges, out,
                     hists, keep_hist, n_threads):
    """The float path for a contiguous float32/float64 chunk ``(n, rows,
    cols, channels)``, in sub-batches spread over threads (each a serial,
    ``nogil`` kernel plus numpy ufuncs, which release the GIL):

    1. ``chosen_gradients``: skimage's gradient pair per pixel of the cell
       area (the colour channel of largest magnitude), as float64;
    2. numpy's own ``hypot(g_col, g_row)`` and
       ``rad2deg(arctan2(g_row, g_col)) % 180`` — the very ufuncs skimage
       calls, so an orientation that lies on a bin edge (square-root images
       put gradients exactly on 60 and 120 degrees) is rounded, and binned,
       as skimage's, whichever SIMD code numpy runs on this CPU;
    3. ``hog_batch_polar``: binning, float32 cell sums, block norms.
    """
    n = images.shape[0]
    rows_used, cols_used = cell_area
    per_part = max(1, _FLOAT_PIXELS_PER_PART // max(1, rows_used * cols_used))
    starts = list(range(0, n, per_part))

    hist_shape = hists.shape[1:]
    block_length = b_row * b_col * hist_shape[2]

    def work(lo, hi):
        scratch = _k.hog_scratch(hist_shape, block_length)
        for s in starts[lo:hi]:
            e = min(n, s + per_part)
            g_row = np.empty((e - s, rows_used, cols_used), np.float64)
            g_col = np.empty_like(g_row)
            _k.chosen_gradients(images[s:e], g_row, g_col)
            magnitude = np.hypot(g_col, g_row)
            orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
            target = out[s:e] if out.dtype == np.float64 else np.empty(out[s:e].shape)
            _k.hog_batch_polar(orientation, magnitude, c_row, c_col, b_row, b_col, method,
                               edges, target, hists[s:e] if keep_hist else hists, keep_hist,
                               scratch)
            if out.dtype != np.float64:
                out[s:e] = target

    run_in_parts(work, len(starts), n_threads)


def hog(images, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3),
        block_norm="L2-Hys", visualize=False, transform_sqrt=False,
        feature_vector=True, *, channel_axis=None, dtype=None, n_jobs=None,
        chunk_size=None, progress=False):
    """Histogram of Oriented Gradients for one image or a batch of images.

    Every parameter has the meaning it has in :func:`skimage.feature.hog`; for
    each image the result equals ``skimage.feature.hog`` of that image (bit
    for bit on uint8 input; see Notes).

    Parameters
    ----------
    images : array_like
        One image ``(rows, cols)`` / ``(rows, cols, channels)`` or a batch
        ``(n, rows, cols)`` / ``(n, rows, cols, channels)``. Integer, float16,
        float32 and float64 data are accepted.
    orientations : int, optional
        Number of orientation bins over [0, 180) degrees.
    pixels_per_cell : (int, int), optional
        Size in pixels of a cell.
    cells_per_block : (int, int), optional
        Number of cells in each block.
    block_norm : {'L1', 'L1-sqrt', 'L2', 'L2-Hys'}, optional
        Block normalisation method.
    visualize : bool, optional
        Also return the HOG picture(s), equal to skimage's.
    transform_sqrt : bool, optional
        Take the square root of every value first (images must be >= 0).
    feature_vector : bool, optional
        Return each image's descriptor flattened.
    channel_axis : int or None, optional
        Axis of the colour channels *of one image* (as in skimage; for a batch
        the sample axis is not counted). ``None`` means grey images.
    dtype : {None, numpy.float32, numpy.float64}, optional
        Output dtype; ``None`` follows skimage (float32 for float16/float32
        input, float64 otherwise). float32 halves the memory of a batch.
    n_jobs : int or None, optional
        Threads (sklearn convention: None = all numba threads, -1 = all cores).
    chunk_size : int or None, optional
        Images converted at a time on the float path (memory bound); results
        do not depend on it.
    progress : bool, optional
        Show a tqdm progress bar over chunks.

    Returns
    -------
    features : ndarray
        ``(n_features,)`` for one image, ``(n, n_features)`` for a batch; with
        ``feature_vector=False`` the block layout
        ``(..., n_blocks_row, n_blocks_col, b_row, b_col, orientations)``.
        A batch of 0 images gives an empty result of that shape (numpy's
        and Dask's convention), after the same parameter checks.
    hog_image : ndarray, optional
        ``(rows, cols)`` or ``(n, rows, cols)``, only with ``visualize=True``.

    Raises
    ------
    TypeError
        Non-numeric input (bool, complex, object, strings) or parameters of
        the wrong type.
    ValueError
        Wrong number of dimensions, an empty image, an image
        too small for one block, an unknown block norm, non-positive cell or
        block sizes, non-finite values, or negative values with
        ``transform_sqrt``.

    Notes
    -----
    Every input skimage accepts gives skimage's result bit for bit
    (``docs/hog-parity.md`` says why). Integer images whose values span at
    most 255 (uint8, int8, and any integer image with ``max - min <= 255``)
    take a table-driven path whose bins and magnitudes come from numpy's
    own ``arctan2``/``hypot``. Float images and ``transform_sqrt`` take the
    float path: numba chooses each pixel's gradient, numpy's own ``hypot``
    and ``arctan2`` (the ufuncs skimage calls, on whatever SIMD code numpy
    picks at run time) give its magnitude and orientation, numba bins and
    normalises.
    """
    orientations, (c_row, c_col), (b_row, b_col) = _check_params(
        orientations, pixels_per_cell, cells_per_block, block_norm)
    images = np.asarray(images)
    if images.dtype.kind not in "uif":
        raise TypeError(
            f"images must have a numeric (integer or float) dtype, got {images.dtype}"
            + (" (convert booleans explicitly, e.g. images.astype(np.uint8))"
               if images.dtype.kind == "b" else "")
        )
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be None, float32 or float64, got {dtype}")
    batch, single = _as_batch(images, channel_axis)
    n, rows, cols, nch = batch.shape
    if rows == 0 or cols == 0 or nch == 0:
        raise ValueError(f"hog received zero-size images of shape {batch.shape[1:]}")
    block_shape = hog_output_shape((rows, cols), orientations, (c_row, c_col), (b_row, b_col))
    if np.dtype(batch.dtype).byteorder not in ("=", "|"):
        batch = batch.astype(batch.dtype.newbyteorder("="))
    float_dtype = _float_dtype(batch.dtype)
    out_dtype = float_dtype if dtype is None else dtype
    n_threads = resolve_n_jobs(n_jobs)
    if chunk_size is None:
        chunk_size = _DEFAULT_CHUNK
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    if n == 0:
        # numpy's and Dask's convention (Dask calls a function on empty
        # chunks): an empty batch gives an empty result of the right shape
        empty = np.empty((0,) + (block_shape if not feature_vector
                                 else (int(np.prod(block_shape)),)), out_dtype)
        if visualize:
            _line_plan(rows, cols, c_row, c_col, orientations)    # (same errors)
            return empty, np.empty((0, rows, cols), float_dtype)
        return empty

    is_int = batch.dtype.kind in "ui"
    if not is_int and not np.isfinite(batch).all():
        raise ValueError("images contain NaN or infinity")
    if transform_sqrt and (batch < 0).any():
        raise ValueError("transform_sqrt=True needs non-negative images (the square "
                         "root of a negative value is NaN)")

    use_lut = False
    shift = None
    if is_int and not transform_sqrt:
        if batch.dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            use_lut = True
        else:
            lo, hi = int(batch.min()), int(batch.max())
            if hi - lo <= 255:
                use_lut, shift = True, lo
    if use_lut:
        lut_bin, lut_mag = _lut(orientations)
    edges = _k.orientation_edges(orientations)
    method = BLOCK_NORMS.index(block_norm)

    ncr, ncc = rows // c_row, cols // c_col
    out = np.empty((n,) + block_shape, dtype=out_dtype)
    hists = np.empty((n if visualize else 1, ncr, ncc, orientations), np.float64)
    hog_images = np.empty((n, rows, cols), float_dtype) if visualize else None
    if visualize:
        plan = _line_plan(rows, cols, c_row, c_col, orientations)

    # The uint8 path reads the caller's array directly; other paths convert a
    # chunk at a time so memory stays bounded.
    direct = use_lut and shift is None and batch.flags.c_contiguous
    step = n if direct else chunk_size
    starts = range(0, n, step)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, total=len(starts), desc="hog", unit="chunk")
    for s in starts:
        e = min(n, s + step)
        chunk = batch[s:e]
        h = hists[s:e] if visualize else hists
        if use_lut:
            if shift is not None:
                chunk = (chunk.astype(np.int64) - shift).astype(np.uint8)
            chunk = np.ascontiguousarray(chunk)
            _hog_lut_chunk(chunk, c_row, c_col, b_row, b_col, method, lut_bin, lut_mag,
                           out[s:e], h, visualize, n_threads)
        else:
            chunk = np.ascontiguousarray(chunk, dtype=float_dtype)
            if transform_sqrt:
                chunk = np.sqrt(chunk)
            _hog_float_chunk(chunk, (ncr * c_row, ncc * c_col), c_row, c_col, b_row,
                             b_col, method, edges, out[s:e], h, visualize, n_threads)
        if visualize:
            pictures = hog_images[s:e]
            run_in_parts(lambda lo, hi: _k.draw_batch(h[lo:hi], *plan, pictures[lo:hi]),
                         e - s, n_threads)
    if not use_lut and not np.isfinite(out).all():
        raise ValueError("HOG overflowed: image values too large for the gradient "
                         f"in {float_dtype} (non-finite gradient magnitudes)")

    if feature_vector:
        out = out.reshape(n, -1)
    if single:
        out = out[0]
        if visualize:
            hog_images = hog_images[0]
    if visualize:
        return out, hog_images
    return out
