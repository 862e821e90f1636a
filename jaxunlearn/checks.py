"""Input checks shared by the data pipeline, the partition and condensation (DESIGN "Errors").

Each check raises a ``ValueError`` that says what was expected and what was given, before any
long computation. They work on host numpy arrays and on device arrays alike; this module imports
no jax itself (the data package stays jax-free), and a device array's finiteness is checked on
the device by a jitted reduction whose compile time is returned, so a timed stage can report it
apart.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_finite",
    "check_fraction",
    "check_images",
    "check_index_set",
    "check_ipc",
    "check_labels",
    "check_num_classes",
]


def _jax() -> Any:
    """The jax module if it is loaded (only then can an array be a device array), else None."""
    return sys.modules.get("jax")


@functools.cache
def _all_finite_jitted() -> Any:
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda a: jnp.all(jnp.isfinite(a)))


def _is_floating(dtype: Any) -> bool:
    jax = _jax()
    if jax is not None:  # also knows jax's extra float types (bfloat16...)
        return bool(jax.numpy.issubdtype(dtype, jax.numpy.floating))
    return bool(np.issubdtype(dtype, np.floating))


def check_choice(value: Any, valid: tuple, what: str) -> None:
    """Raise unless ``value`` is one of ``valid`` (a mode, a backend...); ``what`` names it."""
    if value not in valid:
        raise ValueError(f"{what} must be one of {list(valid)}; got {value!r}")


def check_finite(a: Any, name: str) -> float:
    """Raise if ``a`` holds NaN or inf values.

    Args:
      a: an array of any shape, host or device.
      name: the argument's name in the message.

    Returns:
      The seconds spent compiling the device check (0 for a host array).
    """
    jax = _jax()
    if jax is not None and isinstance(a, jax.Array):
        from jaxunlearn.timing import timed  # here: timing imports jax, this module does not

        finite, _, compile_s = timed(_all_finite_jitted(), a)
    else:
        compile_s = 0.0
        # one float64 reduction detects NaN/inf without a bool array the size of the data (a
        # sum that overflows is told apart by the exact count below)
        finite = np.isfinite(np.sum(a, dtype=np.float64))
    if not bool(finite):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a))))
        if bad:
            raise ValueError(f"{name} must be finite, got {bad} NaN/inf values")
    return compile_s


def check_images(x: Any, name: str = "x") -> float:
    """Validate images ``[n, h, w, c]``: floating point, every axis non-empty, finite.

    Args:
      x: the images (host or device array).
      name: the argument's name in the messages.

    Returns:
      The compile seconds of the device finiteness check (0 for a host array).
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        given = f"shape {tuple(shape)}" if shape is not None else type(x).__name__
        raise ValueError(f"{name} must have shape [n, h, w, c] (NHWC images); got {given}")
    if min(shape) < 1:
        raise ValueError(f"{name} must have n, h, w, c ≥ 1; got shape {tuple(shape)}")
    if not _is_floating(x.dtype):
        raise ValueError(f"{name} must be floating point (normalised images); got dtype {x.dtype}")
    return check_finite(x, name)


def check_num_classes(num_classes: Any) -> int:
    """Validate a number of classes C (a positive int); returns it as an ``int``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes}")
    return int(num_classes)


def check_labels(labels_N: Any, num_classes: int, *, n: int | None = None,
                 name: str = "y") -> np.ndarray:
    """Validate class labels ``[n]``: integers in ``[0, num_classes)``.

    Args:
      labels_N: the labels (host or device; read to the host).
      num_classes: C, a positive int.
      n: the expected length (the number of images), or ``None`` for any length.
      name: the argument's name in the messages.

    Returns:
      The labels as a host array ``[n]`` of their own integer dtype.
    """
    check_num_classes(num_classes)
    lab = np.asarray(labels_N)
    if lab.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [n]; got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{name} must be integers (integer labels in [0, {num_classes})); got "
                         f"dtype {lab.dtype}")
    if n is not None and lab.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (images and labels of the same length, "
                         f"got {n} images and {lab.shape[0]} labels)")
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); got values in [{lab.min()}, {lab.max()}]"
        )
    return lab


def check_ipc(labels_N: np.ndarray, num_classes: int, ipc: int) -> np.ndarray:
    """Check that every class has at least ``ipc`` examples (``ipc`` clusters or images per class).

    Args:
      labels_N: checked labels ``[n]`` (see :func:`check_labels`).
      num_classes: C.
      ipc: a positive int.

    Returns:
      ``[C]`` examples per class.
    """
    if not isinstance(ipc, int | np.integer) or ipc < 1:
        raise ValueError(f"ipc must be a positive integer; got {ipc!r}")
    counts = np.bincount(labels_N, minlength=num_classes)
    small = np.flatnonzero(counts < ipc)
    if small.size:
        detail = ", ".join(f"class {c}: {counts[c]}" for c in small[:10])
        raise ValueError(
            f"ipc={ipc} clusters per class needs at least {ipc} examples in every class; "
            f"too few in {small.size} class(es) ({detail})"
        )
    return counts


def check_index_set(idx: Any, n: int, name: str) -> np.ndarray:
    """Validate a non-empty set of distinct indices into a training set of ``n`` examples.

    Args:
      idx: ``[k]`` integer indices.
      n: the size of the indexed set.
      name: the argument's name in the messages.

    Returns:
      The indices sorted, ``[k]`` int64.
    """
    a = np.asarray(idx)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D index array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: expected at least one index")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {a.dtype}")
    a = np.sort(a.astype(np.int64))
    if a[0] < 0 or a[-1] >= n:
        bad = a[(a < 0) | (a >= n)]
        raise ValueError(
            f"{name} must index a training set of {n} examples ([0, {n})), got {len(bad)} "
            f"out-of-range indices, e.g. {bad[:5].tolist()}"
        )
    dup = a[1:][a[1:] == a[:-1]]
    if dup.size:
        raise ValueError(
            f"{name} must not repeat indices, got {dup.size} duplicates, e.g. "
            f"{np.unique(dup)[:5].tolist()}"
        )
    return a


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Check that ``value`` lies in (0, 1) (or [0, 1) with ``allow_zero``); returns a float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    low_ok = v >= 0.0 if allow_zero else v > 0.0
    if not (low_ok and v < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v
