"""The pruned search's tuning knobs, as one typed parameter.

None of them changes an answer (every stage keeps a proven margin); they
trade memory and work. Tests choose small values through the public
``NearestNeighborsIndex(..., pruned_options=PrunedOptions(...))`` to drive
every path (many tiles, overflowing key lists) on small data.
"""

from dataclasses import asdict, dataclass, fields

from ...kernels import amx as _amx
from ..validation import round_up

# width multiples: stage-1 tile boundaries are multiples of 32 positions
# (two 16-column groups of the packed operand), the float32 GEMM tile of 64
TILE_ALIGN = 32
FIRST_STAGE_CHOICES = ("auto", "bf16", "int8", "float32")


@dataclass(frozen=True)
class PrunedOptions:
    """Parameters of the pruned search (defaults measured on CIFAR-10).

    first_stage : str
        How stage 1 computes its keys (of the k-NN search and of the
        radius search's bound): ``'auto'`` (bfloat16 tile products where the
        index's kernels have them, else int8 products on AVX-512 VNNI or
        AVX2, else the float32 GEMM), ``'bf16'``, ``'int8'`` or
        ``'float32'`` (``ValueError`` where this CPU, the index's
        ``kernels`` or the ``FASTNN_*`` switches do not allow it). No answer
        depends on it.
    first_stage_components : int or None
        Coordinates of the first-stage keys. None: 95 for the float32 BLAS
        stage (as fast as 63 for k = 1, faster for k >= 5), the last full
        32-value step below ``n_components + 7`` for bfloat16 tiles (HOG 121
        of 128, raw 153 of 160), the last full 64-value step below
        ``n_components + 1`` for int8 (127 of 128 or 160).
    stage1_tile : int
        Index points per product tile of stage 1 (the first, dense tile of
        a block; also the size of a cluster of a clustered index).
    stage1_tile_filtered : int
        Points per later tile where the tile kernels filter the product in
        L1 (width then costs no memory traffic; fewer calls cost less).
    key_capacity : int
        Stage-1 keys kept per query (a query with more has them recomputed
        in float64 at the end).
    query_block : int
        Queries per block (fewer for a large k, so that the seed and top-k
        lists stay within ``block_memory``).
    block_memory : int
        Bytes of per-block seed and top-k lists.
    extra_seeds : int
        Seeds beyond k for the first threshold of an unclustered index
        (``min(extra_seeds, 2k)``; CIFAR-10 before clustering: k=1 fastest
        with 2, k=10 with 8).
    mid_step : int
        Stage 2 first checks ``first_stage_components + mid_step``
        coordinates (most points stop there).
    radius_candidates : int
        Candidate slots per query in the radius search's single pass over
        its projected bounds (a query with more is scanned again with
        room; CIFAR HOG averages ~90).
    """
    first_stage: str = "auto"
    first_stage_components: object = None
    stage1_tile: int = 2048
    stage1_tile_filtered: int = 8192
    key_capacity: int = 8192
    query_block: int = 128
    block_memory: int = 64 << 20
    extra_seeds: int = 8
    mid_step: int = 32
    radius_candidates: int = 1024

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "first_stage_components" and v is None:
                continue
            if f.name == "first_stage":
                if v not in FIRST_STAGE_CHOICES:
                    raise ValueError(f"PrunedOptions.first_stage must be one of "
                                     f"{FIRST_STAGE_CHOICES}, got {v!r}")
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if f.name in (
                    "extra_seeds", "mid_step") else 1):
                raise ValueError(f"PrunedOptions.{f.name} must be a positive integer, "
                                 f"got {v!r}")
        for name in ("stage1_tile", "stage1_tile_filtered"):
            if getattr(self, name) % TILE_ALIGN:
                raise ValueError(f"PrunedOptions.{name} must be a multiple of {TILE_ALIGN}, "
                                 f"got {getattr(self, name)}")

    def first_tile_width(self, n):
        """Points in the first (dense) stage-1 tile of a query block: also
        the size of a cluster of a clustered index."""
        return min(round_up(n, TILE_ALIGN), self.stage1_tile)

    def as_dict(self):
        return asdict(self)

    @classmethod
    def coerce(cls, value):
        """``value`` (None, a ``PrunedOptions`` or a dict of its fields)
        as a ``PrunedOptions``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"pruned_options: unknown fields {sorted(unknown)}")
            return cls(**value)
        raise TypeError(f"pruned_options must be a PrunedOptions, a dict or None, "
                        f"got {type(value).__name__}")


def int8_first_stage_family(kernels, families):
    """The kernel family of the int8 first stage (``amx.Int8FilterPlan``)
    for an index with ``kernels`` and kernel ``families`` (see
    ``validation.kernel_families``): AVX-512 VNNI where its int8 products are
    chosen, else (``'auto'``) AVX-VNNI or AVX2, or the one ``kernels`` names
    (``'avxvnni'``, ``'avx2'``), else None (``'portable'``, or no AVX2)."""
    if kernels == "portable":
        return None
    if kernels in ("avx2", "avxvnni"):
        return kernels if _amx.available_int8(kernels) else None
    if families[1] is not None and _amx.available_int8("avx512"):
        return "avx512"
    if kernels == "auto":
        for family in ("avxvnni", "avx2"):
            if _amx.available_int8(family):
                return family
    return None


def resolve_first_stage(requested, kernels, families):
    """``(kind, int8 family)``: the first stage (``'bf16'``, ``'int8'`` or
    ``'float32'``) an index with ``kernels`` and kernel ``families``
    (bfloat16 family, int8 family: see ``validation.kernel_families``) runs
    for ``PrunedOptions.first_stage`` ``requested``, and the int8 kernels'
    family (``int8_first_stage_family``; None unless the kind is int8);
    ``ValueError`` where it cannot run."""
    tile_family = families[0]
    if requested == "auto":
        # (where bfloat16 tiles exist they were chosen because they pay,
        # AMX, or forced, kernels='avx512'; elsewhere int8 beats the
        # float32 GEMM where it runs)
        if tile_family is not None:
            return "bf16", None
        int8 = int8_first_stage_family(kernels, families)
        return ("int8", int8) if int8 is not None else ("float32", None)
    if requested == "bf16" and tile_family is None:
        raise ValueError("PrunedOptions.first_stage='bf16' needs bfloat16 tile kernels; the "
                         "index's kernels (or this CPU, or FASTNN_AMX/FASTNN_AVX512) have none")
    if requested == "int8":
        int8 = int8_first_stage_family(kernels, families)
        if int8 is None:
            raise ValueError("PrunedOptions.first_stage='int8' needs AVX-512 VNNI, AVX-VNNI or AVX2 and "
                             "kernels other than 'portable'")
        return "int8", int8
    return requested, None


def radius_kernels(requested, kernels, families):
    """``(kind, family)`` of the radius search's fused bound, its stage 1,
    for ``PrunedOptions.first_stage`` ``requested`` (``resolve_first_stage``;
    what cannot run here falls back to 'auto'): bfloat16 tile products
    (``('bf16', tile family)``), the int8 filter (``('int8', its
    family)``), or ``(None, None)``: the float32 BLAS bound."""
    try:
        kind, int8 = resolve_first_stage(requested, kernels, families)
    except ValueError:
        kind, int8 = resolve_first_stage("auto", "auto", families)
    if kind == "bf16":
        return "bf16", families[0]
    return ("int8", int8) if kind == "int8" else (None, None)
