"""Numba kernels for skimage-compatible HOG.

Each kernel is written once for one image and driven by a serial batch loop
(``nogil``); ``feature.hog`` spreads a batch over Python threads
(``_threads.run_in_parts``), which runs as fast as a ``parallel=True`` build
and compiles in about half the time on a cold cache.

The arithmetic follows ``skimage.feature.hog`` (scikit-image 0.26) step by step
so that results are bit-identical where the inputs allow it:

* gradients: central differences without division by 2, zero on the border;
* colour: per pixel the channel with the largest ``hypot(g_row, g_col)``
  (first channel on ties);
* orientation ``rad2deg(arctan2(g_row, g_col)) % 180`` in float64, hard
  binning against the float64 bin edges ``(180 / n) * i``. On the integer
  path (uint8/int8 gradients) tables built with numpy's own ufuncs give the
  bins and magnitudes; on the float path numpy itself computes them from
  the gradients the kernels chose (``chosen_gradients``), since numpy's
  ``arctan2`` may be SIMD code that differs from libm's in the last bit,
  and a square-root image puts gradients exactly on bin edges;
* cell value: magnitudes summed in float32 (each addition rounded to float32)
  in row-major pixel order, then divided in float32 by the cell area;
* block norms in float64, with numpy's pairwise summation order.

No scikit-learn, no scikit-image imports here: only arrays in, arrays out.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit

# Per-thread working arrays of the batch kernels, allocated in Python (numba
# compiles array allocation and array expressions slowly on a cold cache):
# acc (cells, float32 sums), hist (cells, float64 means), block and squares
# (one block's values), sum_stack / sum_values (numpy_sum's explicit
# recursion), and for the integer path pixel_index, squared_gradient,
# gradient_index (one image row per channel) and planar (int16 channels).
HogScratch = namedtuple("HogScratch", [
    "acc", "hist", "block", "squares", "sum_stack", "sum_values",
    "pixel_index", "squared_gradient", "gradient_index", "planar"])

# numpy_sum's stack depth: 3 entries per halving of a block's length (a
# block of 2**40 values is far beyond any image)
_SUM_STACK = 128


def hog_scratch(hist_shape, block_length, image_shape=(1, 1, 1)):
    """A ``HogScratch`` for cells ``hist_shape`` (n_cells_row, n_cells_col,
    n_orient), blocks of ``block_length`` values and, on the integer path,
    images ``(rows, cols, channels)``."""
    rows, cols, nch = image_shape
    return HogScratch(
        acc=np.empty(hist_shape, np.float32), hist=np.empty(hist_shape, np.float64),
        block=np.empty(block_length, np.float64), squares=np.empty(block_length, np.float64),
        sum_stack=np.empty((2, _SUM_STACK), np.int64),
        sum_values=np.empty(_SUM_STACK, np.float64),
        pixel_index=np.empty(cols, np.int32),
        squared_gradient=np.empty((nch + 1, cols), np.int32),
        gradient_index=np.empty((nch + 1, cols), np.int32),
        planar=np.empty((nch, rows, cols), np.int16))

# --------------------------------------------------------------------------
# numpy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src), with
# the -0.0 identity that np.add.reduce starts from.
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pairwise_leaf(a, start, n):
    if n < 8:
        res = -0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    i = 8
    stop = n - (n % 8)
    while i < stop:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def numpy_sum(a, stack, vals):
    """``np.sum`` of a contiguous 1-D float64 array, bit for bit.

    numpy sums blocks of <= 128 values with 8 interleaved accumulators and
    splits longer runs in two (the first half rounded down to a multiple of
    8), adding the halves' sums; the reduction starts from -0.0. The
    recursion is evaluated with an explicit stack (numba cannot cache
    recursive functions): ``stack`` (int64, ``(2, >= 3 log2(n) + 3)``:
    starts and lengths, a length of -1 marks "add the two values on top")
    and ``vals`` (float64, ``>= log2(n) + 1``) are scratch.
    """
    n = a.shape[0]
    if n <= 128:
        return -0.0 + _pairwise_leaf(a, np.int64(0), n)
    st_s = stack[0]
    st_n = stack[1]
    top = 0
    nv = 0
    st_s[0] = 0
    st_n[0] = n
    top = 1
    while top > 0:
        top -= 1
        s = st_s[top]
        m = st_n[top]
        if m < 0:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        elif m <= 128:
            vals[nv] = _pairwise_leaf(a, s, m)
            nv += 1
        else:
            n2 = m // 2
            n2 -= n2 % 8
            st_s[top] = 0
            st_n[top] = -1
            st_s[top + 1] = s + n2
            st_n[top + 1] = m - n2
            st_s[top + 2] = s
            st_n[top + 2] = n2
            top += 3
    return -0.0 + vals[0]


# --------------------------------------------------------------------------
# Block normalisation (float64), method codes: 0 L1, 1 L1-sqrt, 2 L2, 3 L2-Hys
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _normalize_blocks(hist, b_row, b_col, method, out, buf, sq, stack, vals):
    """Normalise every block of ``hist`` (n_cells_row, n_cells_col, n_orient)
    into ``out`` (n_blocks_row, n_blocks_col, b_row, b_col, n_orient)."""
    eps = 1e-5
    eps2 = eps * eps
    n_orient = hist.shape[2]
    nbr = out.shape[0]
    nbc = out.shape[1]
    for br in range(nbr):
        for bc in range(nbc):
            k = 0
            for r in range(b_row):
                for c in range(b_col):
                    for o in range(n_orient):
                        buf[k] = hist[br + r, bc + c, o]
                        k += 1
            n = k
            if method == 0 or method == 1:
                for i in range(n):
                    sq[i] = abs(buf[i])
                s = numpy_sum(sq[:n], stack, vals) + eps
                for i in range(n):
                    buf[i] = buf[i] / s
                if method == 1:
                    for i in range(n):
                        buf[i] = math.sqrt(buf[i])
            else:
                for i in range(n):
                    sq[i] = buf[i] * buf[i]
                s = math.sqrt(numpy_sum(sq[:n], stack, vals) + eps2)
                for i in range(n):
                    buf[i] = buf[i] / s
                if method == 3:
                    for i in range(n):
                        v = buf[i]
                        if v > 0.2:
                            v = 0.2
                        buf[i] = v
                        sq[i] = v * v
                    s = math.sqrt(numpy_sum(sq[:n], stack, vals) + eps2)
                    for i in range(n):
                        buf[i] = buf[i] / s
            k = 0
            for r in range(b_row):
                for c in range(b_col):
                    for o in range(n_orient):
                        out[br, bc, r, c, o] = buf[k]
                        k += 1


@njit(cache=True, nogil=True)
def _zero3(a):
    """``a[:] = 0`` for a 3-D array, as loops (numba's array expressions
    cost seconds to compile on a cold cache)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for k in range(a.shape[2]):
                a[i, j, k] = 0


@njit(cache=True, nogil=True)
def _finish_cells(acc, area, hist):
    """float32 cell sums -> float32 mean (skimage's ``total / area``) -> float64."""
    a = np.float32(area)
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            for o in range(acc.shape[2]):
                hist[i, j, o] = np.float64(np.float32(acc[i, j, o] / a))


@njit(cache=True, nogil=True)
def orientation_bin(orientation, edges):
    """skimage's bin of an orientation in degrees (numpy's
    ``rad2deg(arctan2(g_row, g_col)) % 180``); -1 when it falls in no bin.

    ``edges[i] = (180 / n) * i`` for i in 0..n; bin i holds
    ``edges[i] <= o < edges[i + 1]`` (float64 comparisons, as skimage's
    ``cell_hog`` on float64 gradients). ``% 180`` of a tiny negative angle
    rounds to 180.0, which lies in no bin.
    """
    n = edges.shape[0] - 1
    b = int(orientation * n / 180.0)
    if b > n - 1:
        b = n - 1
    if b < 0:
        b = 0
    while b > 0 and orientation < edges[b]:
        b -= 1
    while b < n and orientation >= edges[b + 1]:
        b += 1
    if b >= n or orientation < edges[b]:
        return -1
    return b


# --------------------------------------------------------------------------
# Per-image cell histograms
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _cells_lut(img, c_row, c_col, lut_bin, lut_mag, acc, idxbuf, g2buf, ixbuf, planar):
    """Cell sums for an integer image whose gradients lie in [-255, 255].

    ``img`` is (rows, cols, channels) uint8/int8; the tables are indexed by
    ``(g_row + 255) * 511 + (g_col + 255)`` and were built with numpy's own
    ``hypot``/``arctan2``, so bins and magnitudes are the reference's exactly.

    Per image row: for every channel the squared gradient norms ``g2`` and
    table indices of the whole row (int32 lanes: vectorised), then per pixel
    skimage's colour choice, the argmax of the float64 magnitudes (first
    channel on ties). The largest ``g2`` decides it, except where another
    channel has the same ``g2`` from a different gradient pair: ``hypot`` of
    equal sums of squares can differ in the last bit (``hypot(28, -47) !=
    hypot(17, -52)`` in float64), so those pixels compare the float64
    magnitudes themselves. Then the float32 accumulation, interleaved across
    the cells of the row so that the per-cell addition chains (whose order
    is fixed: row-major within the cell) run independently.
    """
    rows, cols, nch = img.shape
    ncr = acc.shape[0]
    ncc = acc.shape[1]
    _zero3(acc)
    cu = ncc * c_col
    ru = ncr * c_row
    rows_n = min(rows, ru + 1)
    cols_n = min(cols, cu + 1)
    # planar int16 copy of the rows/cols the cells need
    for ch in range(nch):
        for r in range(rows_n):
            for c in range(cols_n):
                planar[ch, r, c] = img[r, c, ch]
    c_hi = min(cu, cols - 1)          # interior columns are 1 .. c_hi - 1
    for r in range(ru):
        ci = r // c_row
        rp = r + 1
        rm = r - 1
        if r == 0 or r == rows - 1:   # g_row = 0 on the first/last row
            rp = r
            rm = r
        for ch in range(nch):
            pp = planar[ch, rp]
            pm = planar[ch, rm]
            p0 = planar[ch, r]
            g2 = g2buf[ch]
            ix = ixbuf[ch]
            for c in range(1, c_hi):
                gr = np.int32(np.int32(pp[c]) - np.int32(pm[c]))
                gc = np.int32(np.int32(p0[c + 1]) - np.int32(p0[c - 1]))
                g2[c] = np.int32(np.int32(gr * gr) + np.int32(gc * gc))
                ix[c] = np.int32(np.int32(np.int32(gr + 255) * 511) + np.int32(gc + 255))
            for c in (0, c_hi):            # g_col = 0 on the first/last column
                if c < cu and (c == 0 or c == cols - 1):
                    gr = np.int32(np.int32(pp[c]) - np.int32(pm[c]))
                    g2[c] = np.int32(gr * gr)
                    ix[c] = np.int32(np.int32(np.int32(gr + 255) * 511) + 255)
        # colour choice, branch-free over the row (vectorised): largest g2,
        # first channel on ties; ``tie`` marks another channel with the same
        # g2 from a different gradient pair (row nch of g2buf holds it)
        bg = g2buf[nch]
        for c in range(cu):
            bg[c] = g2buf[0, c]
            idxbuf[c] = ixbuf[0, c]
        for ch in range(1, nch):
            g2 = g2buf[ch]
            ix = ixbuf[ch]
            for c in range(cu):
                gt = np.int32(g2[c] > bg[c])
                bg[c] = np.int32(bg[c] + gt * np.int32(g2[c] - bg[c]))
                idxbuf[c] = np.int32(idxbuf[c] + gt * np.int32(ix[c] - idxbuf[c]))
        tie = ixbuf[nch]
        for c in range(cu):
            tie[c] = 0
        for ch in range(nch):
            g2 = g2buf[ch]
            ix = ixbuf[ch]
            for c in range(cu):
                tie[c] |= np.int32(g2[c] == bg[c]) & np.int32(ix[c] != idxbuf[c])
        for c in range(cu):
            if tie[c]:
                m_best = -1.0
                for ch in range(nch):
                    j = ixbuf[ch, c]
                    if lut_mag[j] > m_best:
                        m_best = lut_mag[j]
                        idxbuf[c] = j
        for cin in range(c_col):
            for cj in range(ncc):
                idx = idxbuf[cj * c_col + cin]
                b = lut_bin[idx]
                if b >= 0:
                    acc[ci, cj, b] = np.float32(np.float64(acc[ci, cj, b]) + lut_mag[idx])


@njit(cache=True, nogil=True)
def chosen_gradients(images, g_row, g_col):
    """Stage 2 of the float path: per pixel of the cell area
    (``g_row.shape[1:]``) of each float32/float64 image
    ``(n, rows, cols, channels)``, skimage's gradient pair, converted to
    float64: central differences in the image's dtype (zero on the border),
    the channel with the largest ``hypot(g_row, g_col)`` in that dtype
    (first channel on ties; numba's ``hypot`` is libm's, as numpy's)."""
    rows, cols, nch = images.shape[1], images.shape[2], images.shape[3]
    ru, cu = g_row.shape[1], g_row.shape[2]
    zero = images[0, 0, 0, 0] - images[0, 0, 0, 0]
    for i in range(images.shape[0]):
        img = images[i]
        for r in range(ru):
            for c in range(cu):
                best = zero
                bgr = zero
                bgc = zero
                for ch in range(nch):
                    if r == 0 or r == rows - 1:
                        gr = zero
                    else:
                        gr = img[r + 1, c, ch] - img[r - 1, c, ch]
                    if c == 0 or c == cols - 1:
                        gc = zero
                    else:
                        gc = img[r, c + 1, ch] - img[r, c - 1, ch]
                    if nch == 1:
                        bgr = gr
                        bgc = gc
                    else:
                        m = np.hypot(gr, gc)
                        if ch == 0 or m > best:
                            best = m
                            bgr = gr
                            bgc = gc
                g_row[i, r, c] = np.float64(bgr)
                g_col[i, r, c] = np.float64(bgc)


@njit(cache=True, nogil=True)
def _cells_polar(orientation, magnitude, c_row, c_col, edges, acc):
    """Cell sums from per-pixel orientations (degrees) and magnitudes
    (float64, the cell area of one image): each in-bin magnitude added in
    float32, row-major within the cell (skimage's ``cell_hog``)."""
    ncr = acc.shape[0]
    ncc = acc.shape[1]
    _zero3(acc)
    for r in range(ncr * c_row):
        ci = r // c_row
        for c in range(ncc * c_col):
            b = orientation_bin(orientation[r, c], edges)
            if b >= 0:
                cj = c // c_col
                acc[ci, cj, b] = np.float32(np.float64(acc[ci, cj, b]) + magnitude[r, c])


@njit(cache=True, nogil=True)
def hog_batch_polar(orientation, magnitude, c_row, c_col, b_row, b_col, method, edges,
                    out, hists, keep_hist, scratch):
    """Stages 4-6 of the float path for a batch: orientation binning, float32
    cell sums and means, block normalisation, from the orientations and
    magnitudes numpy computed (``(n, rows_used, cols_used)`` float64).
    ``scratch``: a ``HogScratch`` (``hog_scratch``)."""
    for i in range(orientation.shape[0]):
        hist = hists[i] if keep_hist else scratch.hist
        _cells_polar(orientation[i], magnitude[i], c_row, c_col, edges, scratch.acc)
        _finish_cells(scratch.acc, c_row * c_col, hist)
        _normalize_blocks(hist, b_row, b_col, method, out[i], scratch.block, scratch.squares,
                          scratch.sum_stack, scratch.sum_values)


@njit(cache=True, nogil=True)
def _draw_hog_image(hist, starts, pattern, line_r, line_c, line_start, hog_img):
    """skimage's HOG picture: for each cell (row-major) and bin (in order), add
    the cell value to the pixels of its line segment. ``starts[r, c, o]`` is the
    segment's first point, ``pattern[r, c, o]`` the id of its Bresenham offsets
    (``line_r/line_c[line_start[id]:line_start[id + 1]]``). Negative indices
    wrap as numpy's do."""
    ncr, ncc, n_orient = hist.shape
    rows, cols = hog_img.shape
    for r in range(rows):
        for c in range(cols):
            hog_img[r, c] = 0
    for r in range(ncr):
        for c in range(ncc):
            for o in range(n_orient):
                v = hist[r, c, o]
                pid = pattern[r, c, o]
                r0 = starts[r, c, o, 0]
                c0 = starts[r, c, o, 1]
                for p in range(line_start[pid], line_start[pid + 1]):
                    rr = r0 + line_r[p]
                    cc = c0 + line_c[p]
                    if rr < 0:
                        rr += rows
                    if cc < 0:
                        cc += cols
                    hog_img[rr, cc] = np.float64(hog_img[rr, cc]) + v


@njit(cache=True, nogil=True)
def hog_batch_lut(images, c_row, c_col, b_row, b_col, method, lut_bin, lut_mag, out, hists,
                  keep_hist, scratch):
    """HOG of each uint8/int8 image ``(n, rows, cols, channels)`` into
    ``out`` (n, n_blocks_row, n_blocks_col, b_row, b_col, n_orient) by the
    tables (the integer path); the cell histograms into ``hists`` when
    ``keep_hist``. ``scratch``: a ``HogScratch`` (``hog_scratch``)."""
    for i in range(images.shape[0]):
        hist = hists[i] if keep_hist else scratch.hist
        _cells_lut(images[i], c_row, c_col, lut_bin, lut_mag, scratch.acc, scratch.pixel_index,
                   scratch.squared_gradient, scratch.gradient_index, scratch.planar)
        _finish_cells(scratch.acc, c_row * c_col, hist)
        _normalize_blocks(hist, b_row, b_col, method, out[i], scratch.block, scratch.squares,
                          scratch.sum_stack, scratch.sum_values)


def orientation_edges(orientations):
    """Bin edges exactly as skimage computes them: ``(180. / n) * i`` in float64."""
    per = 180.0 / orientations
    return np.array([per * i for i in range(orientations + 1)], dtype=np.float64)


def build_lut(orientations):
    """Bin (int8, -1 = no bin) and float64 magnitude for every integer gradient
    pair in [-255, 255]^2, computed with numpy's own ufuncs as skimage does."""
    g = np.arange(-255, 256, dtype=np.float64)
    g_row, g_col = np.meshgrid(g, g, indexing="ij")
    mag = np.hypot(g_col, g_row)
    ori = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    edges = orientation_edges(orientations)
    bins = np.full(ori.shape, -1, dtype=np.int16)
    for i in range(orientations):
        inside = (ori >= edges[i]) & (ori < edges[i + 1])
        bins[inside] = i
    dtype = np.int8 if orientations <= 127 else np.int16
    return bins.astype(dtype).ravel(), mag.ravel()


@njit(cache=True, nogil=True)
def draw_batch(hists, starts, pattern, line_r, line_c, line_start, hog_imgs):
    """skimage's HOG picture of each image of a batch (``_draw_hog_image``)."""
    for i in range(hists.shape[0]):
        _draw_hog_image(hists[i], starts, pattern, line_r, line_c, line_start, hog_imgs[i])
