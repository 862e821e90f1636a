"""Losses of unlearning (method.md §4, §5): per-example CE, KL with temperature, A-AMU's term.

Everything here is a pure JAX function over arrays, usable under ``jit``/``grad``/``vmap``.
Per-example losses return one value per example (optax style); every function that averages
over examples takes optional ``weights`` ([n], 1 = real example, 0 = padding) and computes a
weighted mean, so fixed-shape batches can carry padding rows that have *exactly* no effect: the
values of zero-weight rows are replaced by 0 before use (a NaN or inf in a padding row can
neither leak into the result nor into the gradient).

The A-AMU regulariser (method.md §4) maps the per-example cross-entropies of a forget batch F and an
unseen batch T to normal scores through a smoothed empirical CDF and a probit, and compares the
two score samples with a Gaussian-kernel MMD²:

    ℓ_i = log(1 + CE_i),   Q_i = Σ_j w_j σ(k d_ij) / Σ_j w_j,   Z_i = clip(Φ⁻¹(Q_i), −κ, κ),
    reg = MMD²(Z_T, Z_F)   (T branch under stop_gradient).

Numerical range of Z. ``Q_i`` and ``1 − Q_i`` are both computed directly (as weighted means of
σ(k d) and σ(−k d)) and the probit is taken of the smaller tail, Z = Φ⁻¹(Q) or −Φ⁻¹(1 − Q), so the
upper tail is as accurate as the lower one (``1 − Q`` formed by subtraction would round to 0 in
float32 once Q > 1 − 6e-8). The tail is clipped below at ``_TAIL_EPS = 1e-30``: Φ⁻¹(1e-30) =
−11.46 and its derivative 1/φ(11.46) ≈ 8.7e28 are finite in float32, whereas the smallest normal
float32 (1.2e-38) sits at the edge of the subnormal range, where XLA:CPU flushes to zero and
Φ⁻¹ returns −inf. So |Z| ≤ 11.46 and the paper's κ = 60 never binds. A clip only zeroes the
gradient beyond it; with 1e-30 that needs a loss more than 69/k (in log(1 + CE) units) beyond
every reference loss, a ratio of (1 + CE) above e^34.5 ≈ 1e15 at k = 2: never in practice. (A
float32-style clip at 1e-7 would already cut the gradient at kΔ > 16.) Inside the clip the
gradient does not vanish: for Q ≈ e^{−kΔ}, Φ⁻¹(Q) ≈ −√(2kΔ), so dZ/dΔ ≈ −√(k/(2Δ)) stays of
order one although the sigmoid's own derivative decays like e^{−kΔ}.

In the self-ranked modes (``paper`` and ``reference``) the diagonal term σ(0) = 1/2 keeps Q in
[w_i/(2Σw), 1 − w_i/(2Σw)], so Q never reaches the clip there; only ``anchored`` mode (forget
losses ranked against the unseen batch, no diagonal) can produce extreme tails.

Precision. The regulariser's products, the ECDF's weighted sums Σ_j w_j σ(±k d_ij) and MMD²'s
p·K·q (all matrix-vector products), run at float32 precision (``Precision.HIGHEST``), never
JAX's default TF32 on A100/H100: MMD² is a difference of terms of order one that nearly cancel
when the samples match, so a 1e-3 relative product error would swamp it. Their gradients (the
transposed products) keep that precision. The rest is elementwise or a sum. On CPU the numbers
are the same either way (``docs/design_notes.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import ndtri

from jaxunlearn.checks import check_choice

__all__ = [
    "DEFAULT_ECDF",
    "ECDF_MODES",
    "STEEPEN_MODES",
    "aamu_regulariser",
    "cross_entropy",
    "ecdf_probit_scores",
    "kl_with_temperature",
    "log1p_losses",
    "mmd2_gaussian",
    "probit",
    "smoothed_ecdf",
    "steepened_loss",
    "weighted_mean",
]

ECDF_MODES = ("paper", "reference", "anchored")
# The one default of the ECDF mode, for the library functions and the registered A-* methods
# alike: the reference code's d_ij = max(0, l_i − l_j) (docs/method.md §4 lists both).
DEFAULT_ECDF = "reference"
STEEPEN_MODES = ("batch_mean_squared", "per_example_squared")

# Lower clip of each ECDF tail before the probit (see the module docstring for the derivation).
_TAIL_EPS = 1e-30


def _check_vector(x, name: str) -> None:
    if jnp.ndim(x) != 1:
        raise ValueError(f"{name} must be a 1-D array [n]; got shape {jnp.shape(x)}")


def _check_weights(values, weights, vname: str, wname: str) -> None:
    if weights is not None and jnp.shape(weights) != jnp.shape(values):
        raise ValueError(f"{wname} must have the shape of {vname} {jnp.shape(values)}; "
                         f"got {jnp.shape(weights)}")


def _float(x) -> jax.Array:
    """``x`` as a float array of at least float32 precision (bf16/f16 losses are upcast)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _resolve_weights(values: jax.Array, weights) -> tuple[jax.Array, jax.Array]:
    """Weights as a float array and values with zero-weight rows replaced by 0.

    The ``where`` (not a product) is what makes padding inert: its VJP sends an exact zero to the
    masked rows, so even a NaN in a padding row produces neither a NaN value nor a NaN gradient.
    """
    if weights is None:
        return values, jnp.ones_like(values)
    w = jnp.asarray(weights, values.dtype)
    return jnp.where(w > 0, values, jnp.zeros_like(values)), w


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at float32 precision (``Precision.HIGHEST``), never TF32 (module docstring)."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _safe_ratio(num: jax.Array, den: jax.Array, empty_value: float) -> jax.Array:
    """``num / den`` with ``empty_value`` where ``den`` is 0 (all weights zero), never inf/NaN."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty_value)


def cross_entropy(logits_NxC: jax.Array, labels_N: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels (docs/method.md §4, §5).

    Args:
      logits_NxC: logits [n, C].
      labels_N: integer labels [n] in ``[0, C)``.

    Returns:
      CE [n], computed stably by ``optax.softmax_cross_entropy_with_integer_labels``.
    """
    if jnp.ndim(logits_NxC) != 2 or jnp.ndim(labels_N) != 1 or (
            jnp.shape(logits_NxC)[0] != jnp.shape(labels_N)[0]):
        raise ValueError("cross_entropy expects logits [n, C] and labels [n]; got shapes "
                         f"{jnp.shape(logits_NxC)} and {jnp.shape(labels_N)}")
    return optax.softmax_cross_entropy_with_integer_labels(_float(logits_NxC), labels_N)


def weighted_mean(values_N: jax.Array, weights_N: jax.Array | None = None) -> jax.Array:
    """Weighted mean ``Σ w v / max(Σ w, tiny)`` over examples; 0 for an empty or all-zero batch.

    The library's one masked mean: of a batch's losses (weights = the padding mask), of
    accuracies, and of feature vectors over the valid rows of a padded set.

    Args:
      values_N: values [n], or [..., n, *f]: the mean runs over the last axis of the weights,
        the trailing axes ``f`` are kept (e.g. features [C, b, d] with weights [C, b] give
        per-class mean features [C, d]).
      weights_N: optional weights of the leading shape of ``values_N`` ([n], or [..., n]; 1 = real
        example, 0 = padding); ``None`` means all ones over the leading axis.

    Returns:
      The mean: a scalar for ``values_N`` [n], else ``[..., *f]``. Zero-weight rows have no
      effect, whatever their value.
    """
    v = _float(values_N)
    if weights_N is None:
        v, w = _resolve_weights(v, None)
        axis = 0
    else:
        w = jnp.asarray(weights_N, v.dtype)
        if jnp.ndim(w) < 1 or jnp.shape(w) != jnp.shape(v)[:jnp.ndim(w)]:
            raise ValueError(f"weights_N must have the leading shape of values_N {jnp.shape(v)}; "
                             f"got {jnp.shape(w)}")
        axis = jnp.ndim(w) - 1
        w = jnp.reshape(w, jnp.shape(w) + (1,) * (jnp.ndim(v) - jnp.ndim(w)))  # over f
        v, w = _resolve_weights(v, w)
    tiny = jnp.finfo(v.dtype).tiny
    return jnp.sum(w * v, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), tiny)


def kl_with_temperature(student_logits: jax.Array, teacher_logits: jax.Array,
                        temperature: float, weights: jax.Array | None = None) -> jax.Array:
    """Distillation KL with temperature (method.md §5): T² mean_i Σ_c p_t,c (log p_t,c − log p_s,c).

    The teacher's distribution is the target, as PyTorch's
    ``KLDivLoss(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T**2``. Gradients flow
    into both arguments; wrap the teacher in ``jax.lax.stop_gradient`` if it is not trained.

    Args:
      student_logits: [n, C].
      teacher_logits: [n, C].
      temperature: T > 0.
      weights: optional [n] example weights (padding = 0).

    Returns:
      A scalar; 0 when student and teacher logits agree (up to a per-row constant).
    """
    if jnp.shape(student_logits) != jnp.shape(teacher_logits) or jnp.ndim(student_logits) != 2:
        raise ValueError("kl_with_temperature expects student and teacher logits of one shape "
                         f"[n, C]; got {jnp.shape(student_logits)} and "
                         f"{jnp.shape(teacher_logits)}")
    if isinstance(temperature, int | float) and not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    log_ps = jax.nn.log_softmax(_float(student_logits) / temperature, axis=-1)
    log_pt = jax.nn.log_softmax(_float(teacher_logits) / temperature, axis=-1)
    # log_softmax of finite logits is finite, so exp(log_pt) underflowing to 0 gives 0·finite = 0
    # (PyTorch's xlogy convention) without a NaN-prone branch.
    kl_N = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return temperature**2 * weighted_mean(kl_N, weights)


def steepened_loss(ce_N: jax.Array, weights: jax.Array | None = None,
                   mode: str = "batch_mean_squared") -> jax.Array:
    """The steepened primary loss of A-AMU (docs/method.md §4).

    Args:
      ce_N: per-example cross-entropy [n].
      weights: optional [n] example weights (padding = 0).
      mode: ``batch_mean_squared`` — (mean CE)², the reference; ``per_example_squared`` —
        mean(CE²).

    Returns:
      A scalar.
    """
    check_choice(mode, STEEPEN_MODES, "steepen mode")
    if mode == "batch_mean_squared":
        return jnp.square(weighted_mean(ce_N, weights))
    return weighted_mean(jnp.square(_float(ce_N)), weights)


def log1p_losses(ce_N: jax.Array) -> jax.Array:
    """The loss transform ℓ = log(1 + CE) applied before the ECDF (method.md §4); [n] -> [n]."""
    return jnp.log1p(_float(ce_N))


def _ecdf_tails(values_N, weights_N, k, mode, anchor, anchor_weights):
    """Both tails of the smoothed ECDF, ``(Q, 1 − Q)``, each computed directly; [n] each."""
    check_choice(mode, ECDF_MODES, "ecdf mode")
    v = _float(values_N)
    _check_vector(v, "values_N")
    _check_weights(v, weights_N, "values_N", "weights_N")
    if mode == "anchored":
        if anchor is None:
            raise ValueError("ecdf mode 'anchored' ranks the values against `anchor` (the unseen "
                             "batch's losses); got anchor=None")
        ref = _float(anchor)
        _check_vector(ref, "anchor")
        _check_weights(ref, anchor_weights, "anchor", "anchor_weights")
        ref_w = anchor_weights
    else:
        if anchor is not None or anchor_weights is not None:
            raise ValueError(f"`anchor` is only used by ecdf mode 'anchored'; got mode {mode!r} "
                             "with an anchor")
        ref, ref_w = v, weights_N
    v, _ = _resolve_weights(v, weights_N)
    ref, w = _resolve_weights(ref, ref_w)
    d_NxM = v[:, None] - ref[None, :]
    if mode == "reference":
        d_NxM = jnp.maximum(d_NxM, 0.0)
    total = jnp.sum(w)
    lower = _safe_ratio(_dot(jax.nn.sigmoid(k * d_NxM), w), total, 0.5)
    upper = _safe_ratio(_dot(jax.nn.sigmoid(-k * d_NxM), w), total, 0.5)
    return lower, upper


def smoothed_ecdf(values_N: jax.Array, weights_N: jax.Array | None = None, *, k: float = 2.0,
                  mode: str = DEFAULT_ECDF, anchor: jax.Array | None = None,
                  anchor_weights: jax.Array | None = None) -> jax.Array:
    """Smoothed empirical CDF Q_i = Σ_j w_j σ(k d_ij) / Σ_j w_j (docs/method.md §4).

    As k → ∞ with distinct values, ``paper`` mode gives Q_i → (r_i − ½)/n (r_i the 1-based rank:
    σ → 1 below, 0 above, and the diagonal σ(0) = ½), the Hazen plotting positions; ties get
    their mid-rank. ``reference`` mode gives Q_i → ½ + (r_i − 1)/(2n).

    Args:
      values_N: losses [n].
      weights_N: optional weights [n] of ``values_N`` (padding = 0); they weight the reference
        sample of the self-ranked modes.
      k: sharpness of the logistic kernel (the ECDF is smoothed at scale 1/k).
      mode: ``reference`` (default, :data:`DEFAULT_ECDF`) — d_ij = max(0, l_i − l_j) (Q ≥ ½);
        ``paper`` — d_ij = l_i − l_j; ``anchored`` — d_ij = l_i − a_j, ranked against ``anchor``.
      anchor: reference losses [m] for ``anchored`` mode (the unseen batch).
      anchor_weights: optional weights [m] of ``anchor``.

    Returns:
      Q [n], clipped to ``[eps, 1 − eps]`` with ``eps = finfo(dtype).eps`` (1.19e-7 in float32,
      the smallest margin that keeps ``1 − eps < 1`` representable) so ``probit(Q)`` is finite.
      :func:`ecdf_probit_scores` does not go through this clip: it reads the smaller tail
      directly and stays accurate out to |Z| = 11.46. All-zero reference weights give Q = ½.
    """
    lower, upper = _ecdf_tails(values_N, weights_N, k, mode, anchor, anchor_weights)
    q = jnp.where(lower <= upper, lower, 1.0 - upper)
    eps = jnp.finfo(q.dtype).eps
    return jnp.clip(q, eps, 1.0 - eps)


def probit(q: jax.Array, kappa: float = 60.0) -> jax.Array:
    """Clipped standard-normal quantile ``clip(Φ⁻¹(q), −κ, κ)`` (docs/method.md §4).

    Args:
      q: probabilities, any shape. 0 and 1 map to ∓κ; keep q strictly inside (0, 1) when
        differentiating (Φ⁻¹ has an infinite slope at the ends).
      kappa: the clip κ.

    Returns:
      An array of q's shape.
    """
    return jnp.clip(ndtri(_float(q)), -kappa, kappa)


def ecdf_probit_scores(losses_N: jax.Array, weights: jax.Array | None = None, *, k: float = 2.0,
                       kappa: float = 60.0, mode: str = DEFAULT_ECDF,
                       anchor: jax.Array | None = None,
                       anchor_weights: jax.Array | None = None) -> jax.Array:
    """Normal scores Z_i = clip(Φ⁻¹(Q_i), −κ, κ) of the smoothed ECDF (docs/method.md §4).

    Φ⁻¹ is applied to the smaller of the two tails Q and 1 − Q (each computed directly), clipped
    below at 1e-30, so Z is finite, symmetric in accuracy and |Z| ≤ 11.46 (see the module
    docstring). Ties, a batch of one and identical losses give Q = ½, Z = 0.

    Args:
      losses_N: losses [n] (ℓ = log(1 + CE) in A-AMU).
      weights: optional weights [n] (padding = 0).
      k, kappa: ECDF sharpness and probit clip.
      mode, anchor, anchor_weights: as in :func:`smoothed_ecdf`.

    Returns:
      Z [n].
    """
    lower, upper = _ecdf_tails(losses_N, weights, k, mode, anchor, anchor_weights)
    use_lower = lower <= upper
    # one probit of the selected tail (≤ ½ up to rounding): `where` picks a branch exactly, so
    # the gradient at ties (Q = ½) is not halved as a min/max or a clip boundary would do
    tail = jnp.maximum(jnp.where(use_lower, lower, upper), _TAIL_EPS)
    z = jnp.where(use_lower, 1.0, -1.0) * ndtri(tail)
    return jnp.clip(z, -kappa, kappa)


def mmd2_gaussian(a_N: jax.Array, b_M: jax.Array, weights_a: jax.Array | None = None,
                  weights_b: jax.Array | None = None, sigma: float = 1.0) -> jax.Array:
    """Biased (V-statistic) MMD² between 1-D samples with a Gaussian kernel (docs/method.md §4).

    MMD² = Σ p_i p_j K(a_i, a_j) + Σ q_i q_j K(b_i, b_j) − 2 Σ p_i q_j K(a_i, b_j) over all pairs,
    diagonals included, with K(u, v) = exp(−(u − v)² / (2σ²)) and p, q the normalised weights.

    Args:
      a_N: sample [n].
      b_M: sample [m].
      weights_a, weights_b: optional weights (padding = 0). A sample whose weights are all zero
        contributes nothing (its terms are 0).
      sigma: kernel bandwidth σ > 0.

    Returns:
      A scalar ≥ 0 up to rounding (not clamped, so the gradient is untouched); exactly 0 for
      identical samples.
    """
    a, b = _float(a_N), _float(b_M)
    _check_vector(a, "a_N")
    _check_vector(b, "b_M")
    _check_weights(a, weights_a, "a_N", "weights_a")
    _check_weights(b, weights_b, "b_M", "weights_b")
    if isinstance(sigma, int | float) and not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    a, wa = _resolve_weights(a, weights_a)
    b, wb = _resolve_weights(b, weights_b)
    pa = _safe_ratio(wa, jnp.sum(wa), 0.0)
    pb = _safe_ratio(wb, jnp.sum(wb), 0.0)
    scale = -0.5 / jnp.square(sigma)

    def mean_kernel(p, u, q, v):
        return _dot(_dot(p, jnp.exp(scale * jnp.square(u[:, None] - v[None, :]))), q)

    return mean_kernel(pa, a, pa, a) + mean_kernel(pb, b, pb, b) - 2.0 * mean_kernel(pa, a, pb, b)


def aamu_regulariser(forget_ce: jax.Array, unseen_ce: jax.Array,
                     forget_weights: jax.Array | None = None,
                     unseen_weights: jax.Array | None = None, *, k: float = 2.0,
                     kappa: float = 60.0, mode: str = DEFAULT_ECDF) -> jax.Array:
    """The A-AMU distribution-matching term MMD²(Z_T, Z_F) (docs/method.md §4).

    ℓ = log(1 + CE) for each batch; Z_T are the ECDF-probit scores of the unseen batch T, under
    ``stop_gradient`` (no gradient ever reaches ``unseen_ce``); Z_F those of the forget batch F.
    In ``paper``/``reference`` mode each batch is ranked against itself; in ``anchored`` mode the
    forget losses are ranked against the unseen losses (so Z_F says where forget losses sit in
    the unseen-loss distribution) while T stays self-ranked (``paper``).

    Args:
      forget_ce: per-example CE of the forget batch [n_F].
      unseen_ce: per-example CE of the unseen batch [n_T].
      forget_weights, unseen_weights: optional weights (padding = 0).
      k, kappa: ECDF sharpness (paper: 2) and probit clip (paper: 60).
      mode: ``reference`` (default, :data:`DEFAULT_ECDF`) | ``paper`` | ``anchored``.

    Returns:
      A scalar MMD² (σ = 1); multiply by λ (paper: 34) in the objective.
    """
    check_choice(mode, ECDF_MODES, "ecdf mode")
    forget_ce, unseen_ce = _float(forget_ce), _float(unseen_ce)
    _check_vector(forget_ce, "forget_ce")
    _check_vector(unseen_ce, "unseen_ce")
    _check_weights(forget_ce, forget_weights, "forget_ce", "forget_weights")
    _check_weights(unseen_ce, unseen_weights, "unseen_ce", "unseen_weights")
    # mask before log1p so a NaN/inf padding row cannot reach the gradient through log1p's VJP
    forget_ce, _ = _resolve_weights(forget_ce, forget_weights)
    unseen_ce, _ = _resolve_weights(jax.lax.stop_gradient(unseen_ce), unseen_weights)
    l_f, l_t = log1p_losses(forget_ce), log1p_losses(unseen_ce)
    self_mode = "paper" if mode == "anchored" else mode
    z_t = jax.lax.stop_gradient(
        ecdf_probit_scores(l_t, unseen_weights, k=k, kappa=kappa, mode=self_mode))
    if mode == "anchored":
        z_f = ecdf_probit_scores(l_f, forget_weights, k=k, kappa=kappa, mode="anchored",
                                 anchor=l_t, anchor_weights=unseen_weights)
    else:
        z_f = ecdf_probit_scores(l_f, forget_weights, k=k, kappa=kappa, mode=mode)
    return mmd2_gaussian(z_t, z_f, unseen_weights, forget_weights)
