"""The paper's membership-inference score (SPEC §6).

Per example, the logit-scaled confidence φ = log p_y − log Σ_{j≠y} p_j. Positives (members) are
the forget set, negatives the evaluation-test examples of the classes present in the forget set,
both truncated to the same size by a seeded draw. A one-feature logistic regression is evaluated
by 5-fold stratified cross-validated ``predict_proba``; the ROC-AUC of those pooled predictions,
in percent, is the plain ``auc``.

The swap rule. If ``auc ≤ 42`` the roles of members and non-members are swapped and the larger
AUC is kept. "Swapped" here means the labels are flipped for the *same* cross-validated
predictions, so the swapped AUC is exactly ``100 − auc`` and ``score = max(auc, 100 − auc)`` in
that case (``score = auc`` otherwise). Refitting the classifier on flipped labels would not be a
swap at all: logistic regression is symmetric under a label flip (the fit returns the negated
coefficients, the predictions become ``1 − p``), so the refit AUC equals ``auc`` again. Note
that the classifier learns the direction of the feature, so members whose confidence is *lower*
than the non-members' are detected as well (``auc`` near 100, no swap); an ``auc`` well below 50
arises from cross-validation itself (folds fitted on slightly different data rank the pooled
held-out predictions inconsistently, typically when the two groups are nearly
indistinguishable), and that is what the swap guards against. 50 means indistinguishable from
unseen data, the ideal after unlearning.

TPR at 1% and 0.1% FPR are read from the ROC curve of the plain orientation (members =
positives, the classifier's probability as the score), linearly interpolated between ROC points
(the upper point of a vertical step at exactly that FPR), in percent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.metrics import predict_logits

__all__ = ["MIAOutput", "logit_confidence", "mia_from_scores", "mia_nonmember_index", "mia_score"]

_N_FOLDS = 5


class MIAOutput(NamedTuple):
    """Result of the MIA; AUC-like values and TPRs in percent."""

    score: float  # the paper's score: auc, or 100 − auc when auc ≤ the swap threshold
    auc: float  # plain ROC-AUC × 100 of the cross-validated predictions
    tpr_at_1fpr: float  # TPR (%) at 1% FPR, plain orientation
    tpr_at_01fpr: float  # TPR (%) at 0.1% FPR, plain orientation
    n: int  # examples per group after truncation (members = non-members = n)


def logit_confidence(logits_NxC: Any, labels_N: Any) -> jax.Array:
    """Logit-scaled confidence φ = log p_y − log Σ_{j≠y} p_j per example (SPEC §6).

    The softmax normaliser cancels, so φ = z_y − logsumexp_{j≠y} z_j: computed from the logits
    with the label's entry masked out of the logsumexp, finite and exact for logits of any
    magnitude (no probability is formed, so nothing under- or overflows).

    Args:
      logits_NxC: logits [n, C], C ≥ 2.
      labels_N: integer labels [n].

    Returns:
      φ [n].
    """
    z = jnp.asarray(logits_NxC)
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    labels = jnp.asarray(labels_N)
    if z.ndim != 2 or labels.ndim != 1 or z.shape[0] != labels.shape[0] or z.shape[1] < 2:
        raise ValueError("logit_confidence expects logits [n, C] with C >= 2 and labels [n]; got "
                         f"shapes {z.shape} and {labels.shape}")
    is_label = labels[:, None] == jnp.arange(z.shape[1])[None, :]
    z_y = jnp.sum(jnp.where(is_label, z, 0.0), axis=1)
    others = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, z), axis=1)
    return z_y - others


def _scores_1d(scores: Any, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-example scores; got shape {s.shape}")
    if s.shape[0] < _N_FOLDS:
        raise ValueError(f"{name} needs at least {_N_FOLDS} examples for {_N_FOLDS}-fold "
                         f"stratified cross-validation; got {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(s)))} "
                         "non-finite values")
    return s


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR of the ROC curve at FPR ``target``, linear between points, top of a vertical step."""
    i = int(np.searchsorted(fpr, target, side="right")) - 1  # last point with fpr <= target
    if i + 1 >= len(fpr) or fpr[i] == target:
        return float(tpr[i])
    frac = (target - fpr[i]) / (fpr[i + 1] - fpr[i])
    return float(tpr[i] + frac * (tpr[i + 1] - tpr[i]))


def mia_from_scores(member_scores: Any, nonmember_scores: Any, *, seed: int = 0,
                    swap_threshold: float = 42.0) -> MIAOutput:
    """The paper's MIA from per-example scores of members and non-members (SPEC §6).

    Args:
      member_scores: scores [n_m] of members (the forget set; the positives).
      nonmember_scores: scores [n_u] of non-members (the negatives).
      seed: seeds the truncation draw and the fold shuffle; same seed, same numbers.
      swap_threshold: if the plain AUC is ≤ this (paper: 42), ``score = 100 − auc`` (see the
        module docstring for what the swap means).

    Returns:
      :class:`MIAOutput`. Both groups are truncated to ``n = min(n_m, n_u)`` examples drawn
      without replacement by a seeded generator (not the first rows). The feature is
      standardised inside each fold before the logistic regression (scikit-learn defaults,
      C = 1): with one feature this only keeps the solver well conditioned for large scores.

    Raises:
      ValueError: fewer than 5 examples in a group, a non-1-D or non-finite score array.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    members = _scores_1d(member_scores, "member_scores")
    nonmembers = _scores_1d(nonmember_scores, "nonmember_scores")
    rng = np.random.default_rng(seed)
    n = min(members.shape[0], nonmembers.shape[0])
    members = members[rng.choice(members.shape[0], n, replace=False)]
    nonmembers = nonmembers[rng.choice(nonmembers.shape[0], n, replace=False)]
    x = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
    clf = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(n_splits=_N_FOLDS, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, p) * 100.0)
    score = max(auc, 100.0 - auc) if auc <= swap_threshold else auc
    fpr, tpr, _ = roc_curve(y, p)
    return MIAOutput(score=score, auc=auc, tpr_at_1fpr=100.0 * _tpr_at_fpr(fpr, tpr, 0.01),
                     tpr_at_01fpr=100.0 * _tpr_at_fpr(fpr, tpr, 0.001), n=int(n))


def mia_nonmember_index(forget_y: Any, test_y: Any) -> np.ndarray:
    """Rows of the test split that are the MIA's non-members (its examples of the forget classes).

    Args:
      forget_y: ``[n_f]`` labels of the forget set; test_y: ``[n_t]`` labels of the test split.

    Returns:
      ``[m]`` indices into the test split.

    Raises:
      ValueError: fewer than 5 members or non-members (5-fold cross-validation needs 5 of each);
        cheap, so a study checks it before training anything.
    """
    forget_y, test_y = np.asarray(forget_y), np.asarray(test_y)
    keep = np.flatnonzero(np.isin(test_y, np.unique(forget_y)))
    for count, what in ((forget_y.shape[0], "forget examples"),
                        (keep.shape[0], "test examples of the forget classes")):
        if count < _N_FOLDS:
            raise ValueError(f"the MIA needs at least {_N_FOLDS} {what} for {_N_FOLDS}-fold "
                             f"cross-validation; got {count}")
    return keep


def mia_score(apply_fn: Callable, params: Any, forget_x: Any, forget_y: Any, test_x: Any,
              test_y: Any, *, seed: int = 0, batch_size: int = 512) -> MIAOutput:
    """The paper's MIA of a model on its forget set (SPEC §6).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the model to attack.
      forget_x, forget_y: the forget set [n_f, ...], [n_f] (members).
      test_x, test_y: the evaluation test split (all classes); its examples of the classes
        present in ``forget_y`` are the non-members.
      seed: seed of the truncation and the cross-validation.
      batch_size: evaluation chunk size.

    Returns:
      :class:`MIAOutput` (50 = indistinguishable from unseen data).

    Raises:
      ValueError: mismatched shapes, or fewer than 5 members or matching non-members (checked
        before any model evaluation).
    """
    forget_y, test_y = np.asarray(forget_y), np.asarray(test_y)
    if np.shape(forget_x)[:1] != forget_y.shape or np.shape(test_x)[:1] != test_y.shape:
        raise ValueError("forget/test inputs and labels must have the same number of examples; "
                         f"got {np.shape(forget_x)}/{forget_y.shape} and "
                         f"{np.shape(test_x)}/{test_y.shape}")
    keep = mia_nonmember_index(forget_y, test_y)
    if isinstance(test_x, jax.Array):
        keep_x = test_x[jnp.asarray(keep)]
    else:
        keep_x = np.asarray(test_x)[keep]
    member = logit_confidence(predict_logits(apply_fn, params, forget_x, batch_size), forget_y)
    nonmember = logit_confidence(predict_logits(apply_fn, params, keep_x, batch_size),
                                 test_y[keep])
    return mia_from_scores(np.asarray(member), np.asarray(nonmember), seed=seed)
