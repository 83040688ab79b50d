"""Compiling one kernel more than once (serial and parallel builds, other
floating-point flags)."""

import types


def twin(py_func, tag):
    """A copy of ``py_func`` under the name ``<name>_<tag>``.

    numba's on-disk cache names its files after the function's qualified
    name and first line, and keys the entries by signature only, not by the
    compile options. Two dispatchers of one Python function (``parallel=True``
    and serial, or with ``fastmath``) therefore share cache entries: after a
    cached run the serial dispatcher can load the parallel machine code (or
    the fastmath one, which rounds differently). The copy gets its own cache
    files; its code object, and so its arithmetic, is the same.
    """
    f = types.FunctionType(py_func.__code__, py_func.__globals__,
                           f"{py_func.__name__}_{tag}", py_func.__defaults__,
                           py_func.__closure__)
    f.__qualname__ = f"{py_func.__qualname__}_{tag}"
    f.__doc__ = py_func.__doc__
    f.__module__ = py_func.__module__
    return f
