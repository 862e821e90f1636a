"""Forget requests: which training examples to unlearn (docs/method.md §1).

A ``ForgetSet`` is a pair of sorted, disjoint index arrays into ``Splits.train_*`` whose union is
the whole training set D: ``forget_idx`` (F) and ``retain_idx`` (R = D \\ F).

Scenarios (``make_forget_set``):

- ``classwise``: every training example of one class (given, or drawn from the seed);
- ``k_classwise``: every training example of k classes;
- ``uniform``: a fraction p of the examples, the first ⌊p·n + ½⌋ of a seeded permutation.

Multi-round forgetting (``next_round_forget``): round r forgets ``fraction`` of the retain set
left after round r−1, and the returned forget set is cumulative. With 10% per round: 10% → 19%
→ 27.1% of D forgotten after three rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxunlearn.checks import check_fraction, check_index_set, check_labels
from jaxunlearn.data.base import rng_for, round_half_up

__all__ = [
    "SCENARIOS",
    "ForgetSet",
    "forget_set_from_indices",
    "make_forget_set",
    "next_round_forget",
]

SCENARIOS = ("classwise", "k_classwise", "uniform")


class ForgetSet(NamedTuple):
    """A forget request as index arrays into the training set.

    Attributes:
      forget_idx: ``[n_f]`` int32, sorted, unique indices of F.
      retain_idx: ``[n_r]`` int32, sorted, the complement of F in the whole training set.
      classes: the forgotten classes of class-wise scenarios (sorted), ``()`` for uniform.
    """

    forget_idx: np.ndarray
    retain_idx: np.ndarray
    classes: tuple[int, ...]


def _check_train_labels(train_y: np.ndarray, num_classes: int) -> np.ndarray:
    y = check_labels(train_y, num_classes, name="train_y")
    if len(y) == 0:
        raise ValueError("train_y is empty: there is nothing to forget from")
    return y


def forget_set_from_indices(
    forget_idx, num_train: int, *, classes: Sequence[int] = ()
) -> ForgetSet:
    """Builds a validated ``ForgetSet`` from explicit forget indices (any forget request).

    Args:
      forget_idx: ``[n_f]`` integer indices into the training set, unique, in range.
      num_train: size n of the training set.
      classes: forgotten classes to record (class-wise requests), ``()`` otherwise.

    Returns:
      ``ForgetSet`` with sorted int32 ``forget_idx`` and its complement ``retain_idx``.

    Raises:
      ValueError: empty, non-integer, out-of-range or duplicate indices, or nothing retained.
    """
    f = check_index_set(forget_idx, int(num_train), "forget_idx")
    if len(f) == num_train:
        raise ValueError(
            f"the forget set covers all {num_train} training examples: nothing would be retained"
        )
    keep = np.ones(int(num_train), bool)
    keep[f] = False
    return ForgetSet(
        forget_idx=f.astype(np.int32),
        retain_idx=np.flatnonzero(keep).astype(np.int32),
        classes=tuple(int(c) for c in classes),
    )


def _check_classes(classes, num_classes: int) -> list[int]:
    cs = [classes] if isinstance(classes, int | np.integer) else list(classes)
    if not cs:
        raise ValueError("classes is empty: expected at least one class to forget")
    for c in cs:
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise ValueError(f"classes must be integers, got {classes!r}")
        if not 0 <= c < num_classes:
            raise ValueError(
                f"class {c} does not exist: classes must lie in [0, {num_classes}), got {classes!r}"
            )
    if len(set(cs)) != len(cs):
        raise ValueError(f"classes must not repeat, got {classes!r}")
    return sorted(int(c) for c in cs)


def make_forget_set(
    train_y: np.ndarray,
    scenario: str,
    *,
    num_classes: int,
    seed: int = 0,
    classes: int | Sequence[int] | None = None,
    k: int = 1,
    fraction: float = 0.1,
    among: np.ndarray | None = None,
) -> ForgetSet:
    """Draws the forget set of one scenario (docs/method.md §1).

    Args:
      train_y: ``[n]`` integer labels of the training set D.
      scenario: ``classwise`` (one class), ``k_classwise`` (several classes) or ``uniform``.
      num_classes: number of classes C.
      seed: seed of the draw (the classes when not given, the uniform permutation).
      classes: class-wise scenarios only: the classes to forget (one for ``classwise``); drawn
        from the seed among the classes present when None.
      k: ``k_classwise`` with ``classes=None``: how many classes to draw.
      fraction: ``uniform`` only: fraction p of the examples to forget, in (0, 1).
      among: optional ``[m]`` index array restricting the draw to a subset of D (e.g. the retain
        set of an earlier round). ``retain_idx`` is still the complement in all of D; see
        ``next_round_forget`` for cumulative multi-round sets.

    Returns:
      ``ForgetSet``. Uniform: ``⌊p·m + ½⌋`` examples (m = n, or the size of ``among``).

    Raises:
      ValueError: unknown scenario, bad labels or ``among``, a class that does not exist or has no
        example, forgetting every class, fraction not in (0, 1), an empty forget set.
    """
    y = _check_train_labels(train_y, num_classes)
    n = len(y)
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    rng = rng_for(seed, "forget")
    pool = np.arange(n) if among is None else check_index_set(among, n, "among")

    if scenario == "uniform":
        if classes is not None:
            raise ValueError(
                f"classes={classes!r} was given for the uniform scenario; it applies only to "
                "'classwise' and 'k_classwise'"
            )
        fraction = check_fraction("fraction", fraction)
        n_forget = round_half_up(fraction * len(pool))
        if n_forget == 0:
            raise ValueError(
                f"empty forget set: fraction {fraction} of {len(pool)} examples rounds to 0"
            )
        forget = rng.permutation(pool)[:n_forget]
        return forget_set_from_indices(forget, n)

    present = np.unique(y[pool])
    all_present = np.unique(y)
    if classes is None:
        n_cls = 1 if scenario == "classwise" else k
        if isinstance(n_cls, bool) or not isinstance(n_cls, int | np.integer) or n_cls < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if n_cls > len(present):
            raise ValueError(
                f"cannot draw k={n_cls} classes: only {len(present)} classes have examples"
                + (" in `among`" if among is not None else "")
            )
        chosen = sorted(int(c) for c in rng.choice(present, n_cls, replace=False))
    else:
        chosen = _check_classes(classes, num_classes)
        if scenario == "classwise" and len(chosen) != 1:
            raise ValueError(
                f"classwise forgets exactly one class, got classes={classes!r}; use k_classwise"
            )
        empty = [c for c in chosen if c not in present]
        if empty:
            where = " in `among`" if among is not None else ""
            raise ValueError(f"classes {empty} have no training examples{where} to forget")
    if set(all_present.tolist()) <= set(chosen):
        raise ValueError(
            f"forgetting classes {chosen} would forget every class present in the training set "
            f"({all_present.tolist()}): nothing would be retained"
        )
    forget = pool[np.isin(y[pool], chosen)]
    return forget_set_from_indices(forget, n, classes=chosen)


def next_round_forget(
    train_y: np.ndarray, prev: ForgetSet, fraction: float, seed: int, num_classes: int
) -> ForgetSet:
    """The cumulative forget set after one more round of uniform forgetting (docs/method.md §1).

    Round r forgets ``fraction`` of the retain set left after round r−1, drawn uniformly with
    ``seed`` (use a different seed per round, e.g. ``seed + r``). The returned ``forget_idx`` is
    cumulative (all rounds so far); the examples new in this round are
    ``np.setdiff1d(result.forget_idx, prev.forget_idx)``. With ``fraction=0.1`` from a 10% round
    0 the cumulative fractions are 19% and 27.1%.

    Args:
      train_y: ``[n]`` integer labels of D.
      prev: the forget set after round r−1 (its ``retain_idx`` is the pool of this round).
      fraction: fraction of the remaining retain set to forget, in (0, 1).
      seed: seed of this round's draw.
      num_classes: number of classes C.

    Returns:
      ``ForgetSet`` whose ``forget_idx`` is the union of ``prev.forget_idx`` and this round's
      draw, ``retain_idx`` its complement, ``classes`` those of ``prev``.
    """
    y = _check_train_labels(train_y, num_classes)
    n = len(y)
    f_prev = check_index_set(prev.forget_idx, n, "prev.forget_idx")
    r_prev = check_index_set(prev.retain_idx, n, "prev.retain_idx")
    if len(f_prev) + len(r_prev) != n or np.intersect1d(f_prev, r_prev).size:
        raise ValueError(
            f"prev is not a forget set of these {n} examples: forget ({len(f_prev)}) and retain "
            f"({len(r_prev)}) must be disjoint and cover the training set"
        )
    new = make_forget_set(
        y, "uniform", num_classes=num_classes, seed=seed, fraction=fraction, among=r_prev
    )
    return forget_set_from_indices(np.union1d(f_prev, new.forget_idx), n, classes=prev.classes)
