"""What an index computes from its data, typed (``index.built``).

Everything here is derived: dropping a field only costs the time to
rebuild it, never an answer. ``fastnn.index_io`` saves the fields listed in
``SAVED`` (the float32 copy for faiss is rebuilt; the kernel families
belong to the process that runs the search).
"""

from dataclasses import dataclass

from .pruned.layout import IndexLayout
from .pruned.projection import Int8Directions, Projection, Spectrum

SAVED = ("absmax", "row_sqnorms", "spectrum", "residual_estimate", "projection", "layout",
         "u8_row_stats")
# the typed records a saved index holds (by class name, for index_io)
RECORDS = {cls.__name__: cls for cls in (Spectrum, Projection, Int8Directions, IndexLayout)}


@dataclass
class BuiltState:
    absmax: object = None           # largest magnitude of float data (validation's pass)
    row_sqnorms: object = None      # |x|^2 per row, float64
    float32_copy: object = None     # faiss's operand for non-float32 data
    spectrum: object = None         # pruned.projection.Spectrum
    residual_estimate: object = None    # (share outside 32, outside 96) from a sample
    projection: object = None       # pruned.projection.Projection
    layout: object = None           # pruned.layout.IndexLayout
    u8_row_stats: object = None     # (row sums, row sums of squares) of uint8 data
    radius_bounds: object = None    # radius.RadiusBounds: the radius search's projection
    cosine_unit_index: object = None    # cosine: (index of the unit rows, row norms)
    ip_augmented: object = None     # inner_product.AugmentedRows: 'ip' as a Euclidean search
    tile_family: object = None      # bfloat16 tile kernels ('amx', 'avx512') or None
    int8_family: object = None      # int8 tile kernels or None

    def forget_rows(self):
        """After rows were added: drop what depends on every row (kept:
        the spectrum, the projection and, extended by the caller, the
        layout)."""
        self.row_sqnorms = self.float32_copy = self.u8_row_stats = None
        self.radius_bounds = self.cosine_unit_index = self.ip_augmented = None

    def saved_fields(self):
        return {name: getattr(self, name) for name in SAVED}


def uses_tiles(families):
    """Whether a ``(tile family, int8 family)`` pair runs tile kernels."""
    return [f is not None for f in families]

