"""The pruned exact search: projection lower bounds, a cascade of stages,
every comparison with a proven margin (``search`` numbers the stages;
``projection`` the building of the bounds; ``layout`` and ``clustering``
the index's side; ``options`` the knobs)."""

from .options import PrunedOptions

__all__ = ["PrunedOptions"]
