"""Differentiable siamese augmentation (DSA) of the dataset-condensation baselines (method.md §3.4).

A JAX port of the reference's ``DiffAugment`` (algebraicdianuj/DC_Unlearning,
``utils/dc_utils.py``, itself from Zhao & Bilen 2021, "Dataset Condensation with Differentiable
Siamese Augmentation", and mit-han-lab/data-efficient-gans), with the reference's
``ParamDiffAug`` values and its default mode ``'S'`` (``DSAParams(aug_mode='M')`` applies
every family in turn, the reference's other mode):

- one transform family of the strategy string (``color``, ``crop``, ``cutout``, ``flip``,
  ``scale``, ``rotate``) is drawn uniformly per call (per batch), then applied; ``color`` is
  brightness, saturation and contrast in turn;
- **siamese** (the reference's call with a seed: real and synthetic batches of a class are
  augmented with the same seed): every random parameter is drawn once and shared by all images
  of the batch (the reference draws one per image and overwrites them with the first), so the
  same key gives the same transform to any batch; :func:`diff_augment` with ``siamese=True``
  therefore commutes with concatenation along the batch axis;
- **not siamese** (the reference's ``seed=-1``, used when GM trains its network on the synthetic
  set): the family is still one per batch, the parameters are drawn per image.

The reference re-seeds torch before each draw with consecutive seeds (seed, seed+1, ...); here
all draws of a call come from one uniform draw of ``key`` (the family's choice, then one row per
parameter in the reference's order), so a key plays the seed's role; integers (crop shifts,
cutout offsets, the family) are ``floor`` of uniforms, uniform on the reference's ranges.
The spatial transforms follow ``F.affine_grid`` + ``F.grid_sample`` at torch's defaults
(``align_corners=False``, bilinear, zero padding); crop is an integer translation with zero fill
and cutout a zeroed square, both as the reference computes them. Everything is a pure, jittable
function of ``(key, images)``, differentiable in the images.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["DSA", "DSA_PARAMS", "DSA_STRATEGY", "DSAParams", "diff_augment", "grid_sample_affine",
           "resolve_dsa"]

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # the reference's cond.py


@dataclasses.dataclass(frozen=True)
class DSAParams:
    """The reference's ``ParamDiffAug`` (hashable: a static argument of jitted code)."""

    aug_mode: str = "S"          # 'S': one family per call; 'M': every family in turn
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0   # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5    # the cut square is 0.5 × 0.5 of the image
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


DSA_PARAMS = DSAParams()  # the reference's values


@dataclasses.dataclass(frozen=True)
class DSA:
    """DSA as a condensation baseline (DM, gradient matching, IDM) runs it: the families of
    ``strategy`` with ``params`` (hashable: a static argument of jitted code). The defaults are
    the reference's."""

    strategy: str = DSA_STRATEGY
    params: DSAParams = DSA_PARAMS


def resolve_dsa(dsa: bool | DSA | None) -> DSA | None:
    """A baseline's ``dsa`` argument: ``True`` the reference's :class:`DSA`, ``False`` or
    ``None`` no augmentation, a :class:`DSA` itself."""
    if isinstance(dsa, DSA) or dsa is None:
        return dsa
    return DSA() if dsa else None


_NDRAW = 3  # uniform draws per image a family uses at most (color: 3)


def _randint(u, low, high):
    """Integers uniform in ``[low, high)`` from uniforms ``u`` in [0, 1)."""
    return jnp.minimum(low + jnp.floor(u * (high - low)), high - 1).astype(jnp.int32)


def grid_sample_affine(x_NxHxWxC: jax.Array, theta_Nx2x3: jax.Array) -> jax.Array:
    """``F.grid_sample(x, F.affine_grid(theta, x.shape))`` at torch's defaults, in NHWC.

    ``theta`` maps normalised output coordinates (x along the width, y along the height, both in
    [-1, 1] with ``align_corners=False``) to input coordinates; sampling is bilinear, and taps
    outside the image count as 0 (``padding_mode='zeros'``).

    Args:
      x_NxHxWxC: images ``[n, h, w, c]``.
      theta_Nx2x3: affine matrices ``[n, 2, 3]``.

    Returns:
      ``[n, h, w, c]``.
    """
    n, h, w, _ = x_NxHxWxC.shape
    xs = (2.0 * jnp.arange(w) + 1.0) / w - 1.0
    ys = (2.0 * jnp.arange(h) + 1.0) / h - 1.0
    gx, gy = jnp.meshgrid(xs, ys)  # [h, w]
    base = jnp.stack([gx, gy, jnp.ones_like(gx)], axis=-1)  # [h, w, 3]
    grid = jnp.einsum("hwk,nok->nhwo", base, theta_Nx2x3.astype(base.dtype))  # [n, h, w, 2]
    ix = ((grid[..., 0] + 1.0) * w - 1.0) / 2.0
    iy = ((grid[..., 1] + 1.0) * h - 1.0) / 2.0

    def sample(img, ix, iy):
        x0, y0 = jnp.floor(ix), jnp.floor(iy)
        out = 0.0
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1.0 - jnp.abs(ix - xi)) * (1.0 - jnp.abs(iy - yi))
            ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            yc = jnp.clip(yi, 0, h - 1).astype(jnp.int32)
            v = img[yc, jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
            out = out + v * jnp.where(ok, wgt, 0.0)[..., None]
        return out

    return jax.vmap(sample)(x_NxHxWxC, ix, iy).astype(x_NxHxWxC.dtype)


# --------------------------------------------------------------------------------- the families
# Each takes (u [_NDRAW, n] uniforms in [0, 1), x [n, h, w, c], p); row i is its i-th draw
# (the reference's i-th re-seeding). All uniforms of a call come from one draw: one random-bits
# kernel instead of one per parameter keeps compilation short.


def _brightness(u, x, p):
    return x + (u[:, None, None, None] - 0.5) * p.brightness


def _saturation(u, x, p):
    m = jnp.mean(x, axis=-1, keepdims=True)
    return (x - m) * (u[:, None, None, None] * p.saturation) + m


def _contrast(u, x, p):
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * (u[:, None, None, None] + p.contrast) + m


def _color(u, x, p):
    return _contrast(u[2], _saturation(u[1], _brightness(u[0], x, p), p), p)


def _crop(u, x, p):
    """Translate by up to ``ratio_crop_pad`` of the size (integers), zero fill."""
    _, h, w, _ = x.shape
    sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    tx = _randint(u[0], -sh, sh + 1)  # rows
    ty = _randint(u[1], -sw, sw + 1)  # columns

    def shift(img, tx, ty):
        r = jnp.arange(h) + tx
        c = jnp.arange(w) + ty
        ok = ((r >= 0) & (r < h))[:, None] & ((c >= 0) & (c < w))[None, :]
        v = img[jnp.clip(r, 0, h - 1)][:, jnp.clip(c, 0, w - 1)]
        return jnp.where(ok[..., None], v, 0.0)

    return jax.vmap(shift)(x, tx, ty).astype(x.dtype)


def _cutout(u, x, p):
    """Zero a square of ``ratio_cutout`` of the size centred at a random offset (clipped)."""
    _, h, w, _ = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    ox = _randint(u[0], 0, h + (1 - ch % 2))
    oy = _randint(u[1], 0, w + (1 - cw % 2))
    r0 = (ox - ch // 2)[:, None]
    c0 = (oy - cw // 2)[:, None]
    rows = (jnp.arange(h)[None] >= r0) & (jnp.arange(h)[None] < r0 + ch)  # [n, h]
    cols = (jnp.arange(w)[None] >= c0) & (jnp.arange(w)[None] < c0 + cw)  # [n, w]
    cut = rows[:, :, None] & cols[:, None, :]
    return x * jnp.where(cut, 0.0, 1.0)[..., None].astype(x.dtype)


def _flip(u, x, p):
    return jnp.where(u[0][:, None, None, None] < p.prob_flip, jnp.flip(x, axis=2), x)


def _scale(u, x, p):
    r = p.ratio_scale
    sx = u[0] * (r - 1.0 / r) + 1.0 / r
    sy = u[1] * (r - 1.0 / r) + 1.0 / r
    z = jnp.zeros_like(sx)
    theta = jnp.stack([jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1)], axis=1)
    return grid_sample_affine(x, theta)


def _rotate(u, x, p):
    a = (u[0] - 0.5) * 2.0 * p.ratio_rotate / 180.0 * math.pi
    cos, sin, z = jnp.cos(a), jnp.sin(a), jnp.zeros_like(a)
    theta = jnp.stack([jnp.stack([cos, -sin, z], -1), jnp.stack([sin, cos, z], -1)], axis=1)
    return grid_sample_affine(x, theta)


_FAMILIES = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip,
             "scale": _scale, "rotate": _rotate}


def diff_augment(key: jax.Array, x_NxHxWxC: jax.Array, strategy: str = DSA_STRATEGY, *,
                 siamese: bool = True, params: DSAParams = DSA_PARAMS) -> jax.Array:
    """The reference's ``DiffAugment(x, strategy, seed, ParamDiffAug())`` for NHWC images.

    Args:
      key: PRNG key; in siamese use, pass the same key for the real and the synthetic batch.
      x_NxHxWxC: images ``[n, h, w, c]`` (normalised).
      strategy: families joined by ``_`` (``''`` or ``'none'``: identity).
      siamese: one parameter draw per batch (True) or per image (False, the reference's
        ``seed=-1``); the family is drawn once per call either way.
      params: augmentation magnitudes (the reference's defaults).

    Returns:
      Augmented images ``[n, h, w, c]``.
    """
    if strategy in ("", "none", "None"):
        return x_NxHxWxC
    names = strategy.split("_")
    unknown = [s for s in names if s not in _FAMILIES]
    if unknown:
        raise ValueError(f"unknown DSA families {unknown}; expected some of {sorted(_FAMILIES)}")
    fns = [_FAMILIES[s] for s in names]
    if params.aug_mode not in ("S", "M"):
        raise ValueError(f"aug_mode must be 'S' or 'M'; got {params.aug_mode!r}")
    n = x_NxHxWxC.shape[0]
    m = 1 if siamese else n  # siamese: one draw shared by the batch
    nf = len(fns) if params.aug_mode == "M" else 1
    u = jax.random.uniform(key, (1 + nf * _NDRAW * m,))
    draws = jnp.broadcast_to(u[1:].reshape(nf, _NDRAW, m, 1), (nf, _NDRAW, m, n // m))
    draws = draws.reshape(nf, _NDRAW, n)
    if params.aug_mode == "M":
        for i, f in enumerate(fns):
            x_NxHxWxC = f(draws[i], x_NxHxWxC, params)
        return x_NxHxWxC
    choice = _randint(u[0], 0, len(fns))
    branches = [lambda d, x, f=f: f(d, x, params) for f in fns]
    return jax.lax.switch(choice, branches, draws[0], x_NxHxWxC)
