"""The evaluation record of one unlearned model (method.md §6): accuracies, the MIA score, and the
per-example loss histograms that the report's plots draw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jaxunlearn.losses import cross_entropy
from jaxunlearn.metrics import accuracy, predict_logits
from jaxunlearn.mia import mia_score

__all__ = ["LOSS_EDGES", "evaluate_unlearning", "loss_histogram", "per_example_loss"]

# Histogram bins of per-example cross-entropy: [0, 1e-4) then 36 log-spaced bins up to 100
# (losses of memorised examples span 1e-4..1, those of forgotten or unseen ones 0.1..20).
LOSS_EDGES = np.concatenate([[0.0], np.logspace(-4, 2, 37)])


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


def per_example_loss(apply_fn: Callable, params: Any, x_NxHxWxC: Any, y_N: Any, *,
                     batch_size: int = 512) -> np.ndarray:
    """Cross-entropy of every example under the model ``params``.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the model's variables.
      x_NxHxWxC: images ``[n, h, w, c]``.
      y_N: labels ``[n]``.
      batch_size: images per forward pass (see ``jaxunlearn.metrics.predict_logits``).

    Returns:
      ``[n]`` float64 host array of per-example cross-entropies (nats), computed in float32 by
      :func:`jaxunlearn.losses.cross_entropy`.
    """
    y = np.asarray(y_N)
    if np.shape(x_NxHxWxC)[:1] != y.shape or y.ndim != 1:
        raise ValueError(f"expected x [n, ...] and y [n]; got {np.shape(x_NxHxWxC)} and {y.shape}")
    if y.shape[0] == 0:
        return np.zeros((0,), np.float64)
    logits = predict_logits(apply_fn, params, x_NxHxWxC, batch_size)
    return np.asarray(cross_entropy(logits, y), np.float64)


def loss_histogram(apply_fn: Callable, params: Any, forget: tuple[Any, Any],
                   unseen: tuple[Any, Any], *, batch_size: int = 512,
                   edges: np.ndarray = LOSS_EDGES) -> dict:
    """Histogram counts of per-example losses on the forget set and on unseen data.

    Args:
      apply_fn, params: the model.
      forget: ``(x, y)`` of the forget set.
      unseen: ``(x, y)`` of data the model never trained on (the MIA's negatives).
      edges: ``[k + 1]`` bin edges; losses beyond the last edge count in the last bin.

    Returns:
      A JSON-ready dict: ``edges`` (list), ``forget`` and ``unseen`` (``[k]`` integer counts),
      ``forget_mean`` and ``unseen_mean`` (mean losses).
    """
    out: dict[str, Any] = {"edges": [float(e) for e in edges]}
    for name, (x, y) in (("forget", forget), ("unseen", unseen)):
        loss = per_example_loss(apply_fn, params, x, y, batch_size=batch_size)
        clipped = np.clip(np.nan_to_num(loss, nan=edges[-1], posinf=edges[-1]), edges[0],
                          edges[-1])
        out[name] = np.histogram(clipped, edges)[0].astype(int).tolist()
        out[f"{name}_mean"] = float(np.mean(loss)) if loss.size else float("nan")
    return out
