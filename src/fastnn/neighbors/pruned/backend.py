"""The pruned backend: builds (once, cached in ``index.built``) the
projection and the layout, then runs ``search``."""

from ..._threads import blas_threads
from ..brute import BruteBackend
from ..registry import EUCLIDEAN, Backend, register
from .layout import build_layout, extend_layout
from .options import resolve_first_stage
from .projection import estimate_residuals, fit_spectrum, build_projection, project_rows
from .search import search

# a spectrum fitted with at least this many directions also answers 'auto''s
# question (its residual outside 96); fewer: a quick estimate
SPECTRUM_DIRECTIONS_FOR_AUTO = 96


def spectrum(index, n_threads=1):
    """The principal directions of a sample of the index (cached), fitted
    on ``n_threads`` (BLAS on one thread each)."""
    built = index.built
    if built.spectrum is None:
        with blas_threads(1):
            built.spectrum = fit_spectrum(index.X, index.n_components, index.random_state,
                                          n_threads)
    return built.spectrum


def spectrum_residual(index, n_threads=1):
    """Shares of variance outside the first 32 and 96 principal directions:
    the spectrum's own figures (the pruned search needs it anyway), or,
    where it fits fewer than 96 directions, an estimate (cached)."""
    built = index.built
    if built.spectrum is None and (index.n_components or SPECTRUM_DIRECTIONS_FOR_AUTO) >= \
            SPECTRUM_DIRECTIONS_FOR_AUTO:
        spectrum(index, n_threads)
    if built.spectrum is not None:
        return built.spectrum.residual_32, built.spectrum.residual_96
    if built.residual_estimate is None:
        with blas_threads(1):
            built.residual_estimate = estimate_residuals(index.X, index.random_state)
    return tuple(built.residual_estimate)


def first_stage(index):
    """``(kind, int8 family)``: the first stage the index's pruned search
    runs (its ``PrunedOptions.first_stage`` resolved for its kernels; a
    choice this process cannot run, in an index loaded elsewhere, falls back
    to 'auto' as ``kernels`` does)."""
    families = (index.built.tile_family, index.built.int8_family)
    try:
        return resolve_first_stage(index.pruned_options.first_stage, index.kernels, families)
    except ValueError:
        return resolve_first_stage("auto", "auto", families)


def projection_and_layout(index, n_threads):
    """The projection and the index's layout (built on first use)."""
    built = index.built
    if built.layout is None:
        kind, _ = first_stage(index)
        projection = build_projection(index.X, index.is_int, built.absmax,
                                      spectrum(index, n_threads), index.pruned_options, kind,
                                      built.int8_family is not None)
        rows, stats = project_rows(index.X, index.is_int, projection, n_threads,
                                   int8_family=built.int8_family,
                                   u8_stats=built.u8_row_stats is None)
        if stats is not None:
            built.u8_row_stats = stats
        built.projection = projection
        built.layout = build_layout(rows, projection.first_stage_components, index.pruned_options,
                                    kind, n_threads, index.random_state)
    return built.projection, built.layout


def add_rows(index, X_new, n_threads):
    """Extend a built layout by the rows ``X_new`` (before they join
    ``index.X``); drops it when they do not fit the projection's scale."""
    built = index.built
    if built.layout is None:
        return
    rows, _ = project_rows(X_new, index.is_int, built.projection, n_threads,
                           int8_family=built.int8_family)
    if rows is None:
        built.projection = built.layout = None       # (rows far beyond the scale: rebuilt)
        return
    built.layout = extend_layout(built.layout, rows, built.projection.first_stage_components,
                                 index.pruned_options, built.layout.stage1_kind, n_threads,
                                 index.random_state)


@register
class PrunedBackend(Backend):
    name = "pruned"
    metrics = EUCLIDEAN
    farthest = False            # lower bounds prune near neighbours only

    @staticmethod
    def search(index, request, dist, ind):
        with blas_threads(1):
            projection, layout = projection_and_layout(index, request.n_threads)
            search(index, request, dist, ind, projection, layout, index.pruned_options,
                   lambda sub, d, i: BruteBackend.search(index, sub, d, i),
                   int8_filter_family=first_stage(index)[1])
