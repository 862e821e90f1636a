"""Ahead-of-time compilation timed apart from execution: the library's one timing mechanism.

Every stage reports its run time without compilation (DESIGN "Honest timing"), so every jitted
program of a timed stage is compiled here, ahead of time, by :func:`compile_ahead`:

- without a ``cache_key``, the program is lowered and compiled now (jax still reuses the
  executable of an identical earlier call, so a repeat costs little), and the seconds are
  returned;
- with a ``cache_key``, the executable is kept in a process-wide cache keyed by that key and the
  argument signature (shapes, dtypes, shardings, static arguments): a method built once and run
  for several seeds compiles its steps once, and a cache hit costs 0 seconds.

:func:`timed` compiles, runs and blocks, returning the output with run and compile seconds apart.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["compile_ahead", "timed"]

# Compiled executables shared by every caller in the process (see compile_ahead).
_COMPILED: dict[tuple, Any] = {}


def _signature(args: tuple, static: dict[str, Any]) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef, tuple((jnp.shape(x), jnp.result_type(x), getattr(x, "sharding", None))
                           for x in leaves), tuple(sorted(static.items())))


def compile_ahead(jitted: Any, *args: Any, cache_key: Hashable | None = None,
                  compiler_options: dict[str, Any] | None = None,
                  **static: Any) -> tuple[Any, float]:
    """Lower and compile ``jitted`` for ``args`` ahead of time, timing the compilation.

    Args:
      jitted: a ``jax.jit``-wrapped function whose static arguments are passed by keyword and
        whose dynamic arguments are passed positionally.
      *args: dynamic (traced) arguments, or arrays of their shapes, dtypes and shardings.
      cache_key: if given, the executable is cached process-wide under (``cache_key``, the
        argument signature). The key should hold the Python function objects it stands for
        (not their ``id``), which keeps them alive and the key unique.
      compiler_options: XLA options of this executable only (``Compiled``'s
        ``compiler_options``), e.g. the stacked-models engine's (:mod:`jaxunlearn.train`).
      **static: static arguments.

    Returns:
      ``(compiled, compile_s)``: the executable, called with the dynamic arguments only, and the
      seconds spent tracing, lowering and compiling now (0 on a cache hit).
    """
    key = None
    if cache_key is not None:
        key = (cache_key, _signature(args, static), tuple(sorted((compiler_options or {}).items())))
        if key in _COMPILED:
            return _COMPILED[key], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile(compiler_options=compiler_options)
    seconds = time.perf_counter() - t0
    if key is not None:
        _COMPILED[key] = compiled
    return compiled, seconds


def timed(jitted: Any, *args: Any, **static: Any) -> tuple[Any, float, float]:
    """Run a jitted function ahead-of-time compiled, timing compilation and execution apart.

    Args:
      jitted, *args, **static: as in :func:`compile_ahead`.

    Returns:
      ``(output, run_s, compile_s)``: the output (blocked until ready), the wall-clock seconds of
      the execution, and the seconds spent tracing, lowering and compiling (near zero when the
      same shapes were compiled before in this process: jax caches the executable).
    """
    compiled, compile_s = compile_ahead(jitted, *args, **static)
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - t0, compile_s
