"""Distribution matching (DM, Zhao & Bilen 2023), a condensation baseline of docs/method.md §3.4.

As the reference runs it (algebraicdianuj/DC_Unlearning ``dc_methods/distribution_matching.py``
with ``cond.py``'s arguments): synthetic pixels start as ``ipc`` distinct real images of each
class; every iteration samples a fresh random extractor and ``batch_real`` real images per class,
augments each class's real and synthetic images with the same DSA transform
(:func:`jaxunlearn.dsa.diff_augment`, siamese) and takes one SGD-momentum step on the pixels of
Σ_c ‖mean φ(aug(real_c)) − mean φ(aug(syn_c))‖², φ the extractor's embedding (the layer before the
linear head, the reference's ``net.embed``).

The per-class real-batch draw :func:`sample_per_class` is shared with :mod:`jaxunlearn.gm` and
:mod:`jaxunlearn.idm`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.checks import check_images, check_ipc, check_labels
from jaxunlearn.dsa import DSA, diff_augment, resolve_dsa
from jaxunlearn.losses import weighted_mean
from jaxunlearn.models import apply_features, batched_features
from jaxunlearn.partition import class_index_table
from jaxunlearn.pools import sample_without_replacement
from jaxunlearn.timing import compile_ahead, timed

__all__ = ["DMOutput", "augment_per_class", "distribution_matching", "dm_step_jitted",
           "init_synthetic", "prepare_real", "sample_per_class"]

ApplyFn = Callable[..., jax.Array]
InitFn = Callable[[jax.Array], Any]


class DMOutput(NamedTuple):
    """Synthetic set of distribution matching.

    Attributes:
      images: ``[C * ipc, h, w, c]`` synthetic images, class-major.
      labels: ``[C * ipc]`` int32.
      loss_history: ``[iterations]`` matching loss before each update.
      timings: ``{"dm_s", "dm_compile_s"}``.
    """

    images: jax.Array
    labels: jax.Array
    loss_history: np.ndarray
    timings: dict[str, float]


def sample_per_class(key: jax.Array, idx_CxN: jax.Array, counts_C: jax.Array,
                     m: int) -> tuple[jax.Array, jax.Array]:
    """``m`` distinct members per class (all of a smaller class, then weight 0).

    Args:
      key: PRNG key.
      idx_CxN, counts_C: the per-class row table and class sizes
        (:func:`jaxunlearn.partition.class_index_table`).
      m: rows per class (static, ``<= N``).

    Returns:
      ``(rows, w)``: ``[C, m]`` row indices and ``[C, m]`` weights (1 drawn, 0 filler).
    """
    valid = jnp.arange(idx_CxN.shape[1])[None, :] < counts_C[:, None]
    pos, w = sample_without_replacement(key, valid, m)
    return jnp.take_along_axis(idx_CxN, pos, axis=1), w


def augment_per_class(key: jax.Array, x_CxMxHxWxC: jax.Array, dsa: DSA | None) -> jax.Array:
    """Siamese DSA of each class's batch ``[C, m, h, w, c]`` with the key ``fold_in(key, c)``
    (``dsa=None``: the batch unchanged).

    Under ``vmap`` the family's ``lax.switch`` evaluates every family and selects per class
    (XLA's batched conditional): a few elementwise passes and gathers over the images, small
    beside a ConvNet's forward pass.
    """
    if not dsa:
        return x_CxMxHxWxC
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(x_CxMxHxWxC.shape[0]))
    return jax.vmap(lambda k, xc: diff_augment(k, xc, dsa.strategy, siamese=True,
                                               params=dsa.params))(
        keys, x_CxMxHxWxC)


@partial(
    jax.jit,
    static_argnames=("apply_fn", "init_fn", "batch_real", "batch_size", "method", "dsa"),
    donate_argnames=("syn", "buf"),
)
def dm_step_jitted(
    syn, buf, it, key, x, idx_CxN, counts_C, lr, momentum,
    *, apply_fn, init_fn, batch_real, batch_size, method, dsa,
):
    """One DM iteration (the jitted core of :func:`distribution_matching`).

    Args:
      syn, buf: synthetic images ``[C * ipc, h, w, c]`` (class-major) and their momentum buffer.
      it: iteration index (folds into ``key`` for the extractor, the real batch and DSA).
      key: the run's DM key.
      x: real images ``[n, h, w, c]``; idx_CxN / counts_C: per-class row table and sizes.

    Returns:
      ``(syn, buf, loss)`` after one SGD-momentum step; ``loss`` is the value before it.
    """
    C, n_max = idx_CxN.shape
    ipc = syn.shape[0] // C
    b = min(batch_real, n_max)
    k_net, k_real, k_aug = jax.random.split(jax.random.fold_in(key, it), 3)
    params = init_fn(k_net)
    ridx, rw = sample_per_class(k_real, idx_CxN, counts_C, b)
    real = augment_per_class(k_aug, x[ridx], dsa)  # [C, b, h, w, c]
    f = batched_features(apply_fn, params, real.reshape(C * b, *x.shape[1:]), batch_size, method)
    mu_real = weighted_mean(f.reshape(C, b, -1), rw.astype(f.dtype))  # [C, d]

    def loss_fn(s):
        s = augment_per_class(k_aug, s.reshape(C, ipc, *s.shape[1:]), dsa)
        fs = apply_features(apply_fn, params, s.reshape(C * ipc, *s.shape[2:]), method)
        mu_syn = jnp.mean(fs.reshape(C, ipc, -1), axis=1)
        return jnp.sum(jnp.square(mu_real - mu_syn))

    loss, g = jax.value_and_grad(loss_fn)(syn)
    buf = momentum * buf + g
    return syn - lr * buf, buf, loss


@partial(jax.jit, static_argnames=("ipc",))
def _init_jitted(key, x, idx_CxN, counts_C, *, ipc):
    k_init, k_run = jax.random.split(key)
    syn = x[sample_per_class(k_init, idx_CxN, counts_C, ipc)[0].reshape(-1)]
    return syn, jnp.zeros_like(syn), k_run


def prepare_real(x_NxHxWxC: Any, y_N: Any, num_classes: int, ipc: int,
                 **positive: int) -> tuple[float, jax.Array, jax.Array, jax.Array]:
    """Checks and device layout shared by DM, GM and IDM (before any long work).

    Args:
      x_NxHxWxC, y_N: real images and labels.
      num_classes, ipc: C and the synthetic images per class (every class needs ``ipc``).
      **positive: named counts that must be ``>= 1`` (``iterations`` may be 0).

    Returns:
      ``(check_compile_s, x, idx_CxN, counts_C)`` on the device.
    """
    check_compile_s = check_images(x_NxHxWxC)
    lab = check_labels(y_N, num_classes, n=x_NxHxWxC.shape[0]).astype(np.int32)
    counts = check_ipc(lab, num_classes, ipc)
    bad = {k: v for k, v in positive.items()
           if isinstance(v, bool) or not isinstance(v, int | np.integer)
           or v < (0 if k == "iterations" else 1)}
    if bad:
        raise ValueError(f"expected iterations >= 0 and positive integer counts; got {bad}")
    idx, _ = class_index_table(lab, num_classes, counts)
    return (check_compile_s, jnp.asarray(x_NxHxWxC), jnp.asarray(idx),
            jnp.asarray(counts, jnp.int32))


def init_synthetic(key: jax.Array, x: jax.Array, idx_CxN: jax.Array, counts_C: jax.Array,
                   ipc: int) -> tuple[tuple[jax.Array, jax.Array, jax.Array], float]:
    """Initial synthetic images (``ipc`` distinct real images per class), momentum, run key.

    Returns:
      ``((syn [C * ipc, h, w, c], zeros like syn, run key), compile_s)``.
    """
    out, _, compile_s = timed(_init_jitted, key, x, idx_CxN, counts_C, ipc=int(ipc))
    return out, compile_s


def distribution_matching(
    apply_fn: ApplyFn,
    init_fn: InitFn,
    x_NxHxWxC: jax.Array,
    y_N: Any,
    *,
    num_classes: int,
    ipc: int,
    key: jax.Array,
    iterations: int,
    lr: float = 1e-2,
    momentum: float = 0.5,
    batch_real: int = 256,
    batch_size: int = 1024,
    method: str | None = "features",
    dsa: bool | DSA = True,
) -> DMOutput:
    """Distribution matching (Zhao & Bilen 2023) as the reference's ``cond.py`` runs it.

    Synthetic images start as ``ipc`` distinct real images of each class; iteration ``it``
    samples a fresh random extractor ``init_fn(k)`` and ``batch_real`` real images per class
    (without replacement; all of a smaller class), with keys from ``fold_in(key, it)``; the real
    and synthetic images of class c get the same DSA transform (key ``fold_in(k_aug, c)``), and
    one SGD-momentum step is taken on the pixels of Σ_c ‖mean φ(real_c) − mean φ(syn_c)‖².

    Defaults are the reference's (``cond.py``: ``lr_img=1e-2``, momentum 0.5, ``batch_real=256``,
    ``do_dsa=True`` with ``'color_crop_cutout_flip_scale_rotate'``, ``bn=False``: per-class
    means). Options and differences, on purpose:

    - ``lr=1.0`` is the DM paper's value (and this function's default before DSA was added);
      ``dsa=False`` runs without augmentation.
    - The reference seeds DSA from the clock per class (``int(time.time() * 1000) % 100000``),
      so consecutive classes may share a transform when they run within a millisecond; here each
      class and iteration has its own key, and the run is reproducible from ``key``.
    - The reference evaluates the classes one after another; here all classes in one program.

    Args:
      apply_fn, init_fn: the extractor's architecture (a flax model's ``apply`` and
        ``init_fn(key) -> params``, e.g. :func:`jaxunlearn.models.init_fn_for`).
      x_NxHxWxC, y_N: real images ``[n, h, w, c]`` and labels ``[n]``.
      num_classes: ``C``; every class needs at least ``ipc`` images.
      ipc: synthetic images per class.
      key: PRNG key (initial images, extractors, real batches, augmentation).
      iterations: SGD iterations.
      lr, momentum: SGD hyper-parameters on the pixels (1e-2, 0.5).
      batch_real: real images per class per iteration (all of a smaller class).
      batch_size: images per forward pass of the real images (bounds activation memory).
      method: ``apply_fn``'s method giving the embedding.
      dsa: differentiable siamese augmentation: ``True`` the reference's, ``False`` none, or a
        :class:`jaxunlearn.dsa.DSA` (its strategy and parameters).

    Returns:
      A :class:`DMOutput` (class-major images and labels).
    """
    jax.block_until_ready(x_NxHxWxC)  # pending upstream work is not this stage's time
    t0 = time.perf_counter()
    check_compile_s, x_dev, idx_d, counts_d = prepare_real(
        x_NxHxWxC, y_N, num_classes, ipc, iterations=iterations, batch_real=batch_real,
        batch_size=batch_size)
    (syn, buf, k_run), init_compile_s = init_synthetic(key, x_dev, idx_d, counts_d, ipc)
    args = lambda s, b, it: (s, b, jnp.int32(it), k_run, x_dev, idx_d, counts_d,
                             jnp.float32(lr), jnp.float32(momentum))
    static = dict(apply_fn=apply_fn, init_fn=init_fn, batch_real=int(batch_real),
                  batch_size=int(batch_size), method=method, dsa=resolve_dsa(dsa))
    # A host loop of one compiled step: XLA:CPU runs convolutions ≈1.4× slower inside a
    # while loop (lax.scan) than as a top-level program, which would handicap the baseline.
    step, compile_s = (compile_ahead(dm_step_jitted, *args(syn, buf, 0), **static) if iterations
                       else (None, 0.0))
    compile_s += check_compile_s + init_compile_s
    losses = []
    for it in range(iterations):
        syn, buf, loss = step(*args(syn, buf, it))
        losses.append(loss)
    syn = jax.block_until_ready(syn)
    labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), ipc)
    wall = time.perf_counter() - t0
    return DMOutput(
        syn, labels, np.asarray(jnp.stack(losses) if losses else np.zeros(0), np.float64),
        {"dm_s": wall - compile_s, "dm_compile_s": compile_s},
    )
