"""Per-kernel numba compile times of a script, from numba's compile events.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_times.py SCRIPT.py

Runs SCRIPT.py (as ``__main__``) with a recorder on numba's
``numba:compile`` events and prints the top-level compiles (a kernel called
from Python) with their time, nested compiles of the functions they call
indented below them (> 50 ms). Point ``NUMBA_CACHE_DIR`` at an empty folder
for cold figures; a warm cache shows nothing (every kernel loads).
"""

import runpy
import sys

from numba.core import event


def main(path):
    cm = event.install_recorder("numba:compile")
    rec = cm.__enter__()
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        cm.__exit__(None, None, None)
    stack, lines, total = [], [], 0.0
    for ts, ev in rec.buffer:
        d = ev.data["dispatcher"]
        name = d.py_func.__qualname__ + (" [parallel]" if d.targetoptions.get("parallel") else "")
        if ev.is_start:
            stack.append((name, ts, len(lines)))
            lines.append(None)
        else:
            name, t0, pos = stack.pop()
            if not stack:
                total += ts - t0
            lines[pos] = (len(stack), ts - t0, name)
    print(f"compile time of top-level kernels: {total:.2f} s")
    for depth, seconds, name in lines:
        if seconds > 0.05:
            print(f"{'  ' * depth}{seconds:6.2f} s  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
