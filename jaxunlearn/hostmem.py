"""Keep freed host memory in the process, so XLA:CPU's large buffers stop page-faulting.

XLA:CPU allocates every executable's temporaries and outputs with ``malloc`` from its worker
threads. glibc serves a request above 64 MiB from a worker thread with a fresh ``mmap`` and
returns it with ``munmap`` on free, so the next call of the same executable touches brand-new
pages again: one minor page fault per 4 KiB. On this project's 2-core VM that cost is large.
One ConvNet-3 train step (320 images at 32×32) took 385,000 page faults and 0.85 s of system time
per step, out of 1.85 s (measured with ``getrusage``; ``bench/conv.py`` reports it).

:func:`retain_freed_memory` asks glibc, through ``mallopt``, to

- serve every thread from the main arena (``M_ARENA_MAX = 1``), which can grow past 64 MiB,
- never ``mmap`` a block (``M_MMAP_MAX = 0``), and
- never give freed memory back to the kernel (``M_TRIM_THRESHOLD`` = the largest value),

so that, once the heap has grown to the largest step's working set, a step re-uses pages it has
already touched: zero page faults, and the same step took 1.48–1.51 s instead of 1.81–1.85 s.
The cost is that the process's resident memory stays at its peak until it exits.

It must run before JAX starts its CPU client (its first computation), because a thread keeps the
arena it first allocated from. The experiments' command line and the benchmarks call it first
thing; the library never calls it on import, since it changes the allocator of the whole process.
Set ``JAXUNLEARN_RETAIN_MEMORY=0`` to turn it off there. It does nothing (and returns False) on a
C library other than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_done: set[str] = set()


def retain_freed_memory(single_arena: bool = True) -> bool:
    """Make glibc keep freed memory (see the module docstring). True if the settings took effect.

    Args:
      single_arena: also serve every thread from one arena (for work with buffers above 64 MiB,
        e.g. a ConvNet-3 step on 32×32 images; it slows steps on tiny images). It can be added by
        a later call, as long as JAX has not started.

    Returns False, and changes nothing, when ``JAXUNLEARN_RETAIN_MEMORY=0``, off Linux, or when
    the C library has no ``mallopt``.
    """
    wanted = {"retain"} | ({"single_arena"} if single_arena else set())
    if wanted <= _done:
        return True
    if os.environ.get("JAXUNLEARN_RETAIN_MEMORY", "1") == "0" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # glibc converts the int to size_t, so -1 is the largest threshold: never trim.
    settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)]
    if single_arena:
        settings.append((_M_ARENA_MAX, 1))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    if ok:
        _done.update(wanted)
    return ok
