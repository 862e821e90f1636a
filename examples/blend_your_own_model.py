"""Blend a retain set with your own Flax model as the random feature networks ψ and φ.

    python examples/blend_your_own_model.py                       # 10% uniform forgetting
    python examples/blend_your_own_model.py --forget_class 3      # class-wise forgetting

What it shows: Blend (docs/method.md §3) needs no jaxunlearn model. Any ``flax.linen`` Module
works, given

- a feature function ``embed(params, x) -> [n, d]`` (here: the network without its head), passed
  as ``apply_fn`` together with ``method=None``, and
- a pure ``init_fn(key) -> params`` (here: ``model.init`` on one dummy image).

Blend's networks are never trained: ψ (one random initialisation) embeds the training set for
the per-class k-means (``jaxunlearn.partition.partition_by_class``, once per dataset), and φ (a
second one) is the feature space in which ``jaxunlearn.condense.condense`` matches each free
cluster's blended image to its members' mean, per forget request. The reduced retain set
(residual images of the clusters a forget example touches, plus one blended image per untouched
cluster) then replaces the real retain set in ``make_unlearn_data``.

Why ``method=None``: ``partition_by_class``, ``condense``/``blend_clusters`` (and DM, IDM) call
``apply_fn(params, x, method=method)`` with ``method="features"`` by default, the name of the
embedding method of jaxunlearn's own models. Given a module without a ``features`` method they
fail with flax's ``AttributeError: "Net" object has no attribute "features"``; with
``method=None`` they call ``apply_fn(params, x)`` and take its output as the features. (Passing
``model.apply`` with ``method=None`` also works, and then clusters the random logits; passing
``method="embed"``, the name of the module's own method, works too.) Do not use
``jaxunlearn.models.init_fn_for`` on your module: it re-initialises a submodule named ``head``
and fails with ``KeyError: 'head'`` on other models.

Expected output (2026-12-07, 2-core CPU shared with other jobs, defaults; under 20 s, times vary
with the machine's load)::

    digits seed 0: forgetting 10% uniformly (81 images); your own TinyCNN as ψ and φ, ipc 16
    retain set: 727 images -> 455 (361 residual + 94 blended, one per free cluster; 37% smaller)
    stage times (s, compilation apart):
      embed      0.036   (+ 0.04 compiling)
      kmeans     0.182   (+ 1.62 compiling)
      split      0.001
      blend      0.344   (+ 2.93 compiling)
    Blend's matching loss, 12 iterations: 1.7018e-04 -> 1.7014e-04 (first: the clusters' means)

With ``--forget_class 3`` every cluster of class 3 is touched and holds no retain image: 726 real
images -> 144 (0 residual + 144 blended; 80% smaller), the digits study's reduction. The matching
loss barely moves on digits in Blend's 12 iterations at its default learning rate (with
jaxunlearn's own ConvNet as well: 1.1271e-03 -> 1.1267e-03), so each blended image stays close
to its cluster's mean image.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxunlearn import data
from jaxunlearn.condense import condense
from jaxunlearn.hostmem import retain_freed_memory
from jaxunlearn.partition import partition_by_class
from jaxunlearn.unlearn import make_unlearn_data


class TinyCNN(nn.Module):
    """Your own model: two conv blocks and a linear head (no batch statistics: Blend optimises
    clusters in chunks and relies on every image being processed on its own)."""

    num_classes: int = 10
    width: int = 32

    def setup(self):
        self.conv1 = nn.Conv(self.width, (3, 3))
        self.conv2 = nn.Conv(self.width, (3, 3))
        self.head = nn.Dense(self.num_classes)

    def embed(self, x_NxHxWxC: jax.Array) -> jax.Array:
        """Features ``[n, d]`` before the head."""
        h = nn.avg_pool(nn.relu(self.conv1(x_NxHxWxC)), (2, 2), strides=(2, 2))
        h = nn.avg_pool(nn.relu(self.conv2(h)), (2, 2), strides=(2, 2))
        return h.reshape(h.shape[0], -1)

    def __call__(self, x_NxHxWxC: jax.Array) -> jax.Array:
        return self.head(self.embed(x_NxHxWxC))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ipc", type=int, default=16, help="k-means clusters per class")
    p.add_argument("--forget_fraction", type=float, default=0.1,
                   help="uniform forgetting: this fraction of the training set")
    p.add_argument("--forget_class", type=int, default=None,
                   help="forget this class instead (class-wise forgetting)")
    p.add_argument("--iterations", type=int, default=12, help="Blend's SGD iterations")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; return the partition, the ``CondenseOutput`` and the request."""
    args = parse_args(argv)
    k_psi, k_kmeans, k_phi = jax.random.split(jax.random.key(args.seed), 3)

    ds = data.load_dataset("digits")
    splits = data.make_splits(ds, unseen_fraction=0.5, seed=args.seed)
    x, y = splits.train_x, splits.train_y
    if args.forget_class is None:
        forget = data.make_forget_set(y, "uniform", num_classes=splits.num_classes,
                                      seed=args.seed, fraction=args.forget_fraction)
    else:
        forget = data.make_forget_set(y, "classwise", num_classes=splits.num_classes,
                                      classes=args.forget_class)

    model = TinyCNN(num_classes=splits.num_classes)

    def init_fn(key: jax.Array):
        return model.init(key, jnp.zeros((1, *x.shape[1:]), jnp.float32))

    def embed(params, x_NxHxWxC):
        return model.apply(params, x_NxHxWxC, method=TinyCNN.embed)

    # once per dataset: random features of ψ, then ipc k-means clusters per class
    part = partition_by_class(embed, init_fn(k_psi), x, y, num_classes=splits.num_classes,
                              ipc=args.ipc, key=k_kmeans, method=None)
    # per forget request: free/residual split, then Blend with φ (a fresh random network)
    red = condense(embed, init_fn, x, y, part, forget.forget_idx, forget.retain_idx, key=k_phi,
                   iterations=args.iterations, method=None)

    s, t = red.sizes, {**part.timings, **red.timings}
    n_blended = 0 if red.blend is None else int(red.blend.images.shape[0])
    what = (f"class {forget.classes[0]}" if forget.classes
            else f"{args.forget_fraction:.0%} uniformly")
    print(f"digits seed {args.seed}: forgetting {what} ({len(forget.forget_idx)} images); "
          f"your own TinyCNN as ψ and φ, ipc {args.ipc}")
    print(f"retain set: {s['n_retain']} images -> {s['n_reduced']} "
          f"({s['n_residual']} residual + {n_blended} blended, one per free cluster; "
          f"{s['reduction']:.0%} smaller)")
    print("stage times (s, compilation apart):")
    for name in ("embed", "kmeans", "split", "blend"):
        compile_s = t.get(f"{name}_compile_s")
        extra = "" if compile_s is None else f"   (+ {compile_s:.2f} compiling)"
        print(f"  {name:8s} {t[f'{name}_s']:7.3f}{extra}")
    if red.blend is not None:
        loss = red.blend.loss_history
        print(f"Blend's matching loss, {len(loss)} iterations: {loss[0]:.4e} -> {loss[-1]:.4e} "
              "(first: the clusters' means)")
    # the reduced set is the retain set of any unlearning method (run_method)
    unlearn_data = make_unlearn_data(
        (red.x, red.y), (x[forget.forget_idx], y[forget.forget_idx]),
        (splits.unseen_x, splits.unseen_y), splits.num_classes)
    return {"partition": part, "condensed": red, "forget": forget, "train": (x, y),
            "unlearn_data": unlearn_data}


if __name__ == "__main__":
    # before JAX's first computation: XLA:CPU's buffers stop page-faulting (docs/speed.md)
    retain_freed_memory(single_arena=False)
    main()
