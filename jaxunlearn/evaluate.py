"""The evaluation record of one unlearned model (SPEC §6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jaxunlearn.metrics import accuracy
from jaxunlearn.mia import mia_score

__all__ = ["evaluate_unlearning"]


def evaluate_unlearning(
    apply_fn: Callable,
    params: Any,
    *,
    retain: tuple[Any, Any],
    forget: tuple[Any, Any],
    test: tuple[Any, Any],
    seed: int = 0,
    batch_size: int = 512,
    mia_options: dict[str, Any] | None = None,
) -> dict[str, float | None]:
    """Retain/forget/test accuracy (percent) and the paper's MIA on the forget set.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the model to evaluate.
      retain: ``(x, y)`` of the *real* retain set (never the condensed one).
      forget: ``(x, y)`` of the forget set (the MIA's positives).
      test: ``(x, y)`` of the evaluation test split (all classes; the MIA's negatives are its
        examples of the classes present in the forget set).
      seed: seed of the MIA's cross-validation and truncation.
      mia_options: keyword arguments of :func:`~jaxunlearn.mia.mia_score` (``phi``, ``swap``,
        ``standardize``); the reference's procedure by default.

    Returns:
      ``retain_acc``, ``forget_acc``, ``test_acc``, ``test_retained_acc`` (test accuracy on the
      classes with no forgotten example, ``None`` when every class has one: uniform forgetting),
      ``mia`` (the paper's score, 50 = ideal),
      ``mia_auc`` (plain AUC; rank methods by this one), ``mia_swap_auc`` (the reference swap's
      second AUC, ``None`` when it did not run), ``mia_tpr1``/``mia_tpr01`` (TPR at 1% / 0.1%
      FPR, percent).
    """
    test_x, test_y = np.asarray(test[0]), np.asarray(test[1])
    kept = ~np.isin(test_y, np.unique(np.asarray(forget[1])))
    out = {
        "retain_acc": accuracy(apply_fn, params, *retain, batch_size=batch_size),
        "forget_acc": accuracy(apply_fn, params, *forget, batch_size=batch_size),
        "test_acc": accuracy(apply_fn, params, test_x, test_y, batch_size=batch_size),
        "test_retained_acc": (accuracy(apply_fn, params, test_x[kept], test_y[kept],
                                       batch_size=batch_size) if kept.any() else None),
    }
    m = mia_score(apply_fn, params, forget[0], forget[1], test[0], test[1], seed=seed,
                  batch_size=batch_size, **(mia_options or {}))
    out.update(mia=m.score, mia_auc=m.auc, mia_swap_auc=m.swap_auc, mia_tpr1=m.tpr_at_1fpr,
               mia_tpr01=m.tpr_at_01fpr)
    return out
