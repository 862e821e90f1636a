"""Blend's learning rate in the CPU-sized configs: the small ipc's cubic, or the paper's step.

``--scale cpu`` keeps ``blend_lr(ipc)`` (method.md §3.3) at its smaller ipc. Blend's loss is
averaged
over the S free clusters, so each cluster's weights move by ``lr / S`` per unit gradient; at the
CPU ipcs that step is 10–60× smaller than at the paper's scale (CIFAR-10: ipc 100 gives
blend_lr = 100 over S = 900 clusters, 0.11, against 9,999 over 9,000 at ipc 1000, 1.11). This
script runs Blend at both learning rates on the CPU-sized data and prints what each does:

- ``small``: ``blend_lr(cpu_ipc)``, what the CPU configs use today;
- ``paper_step``: ``blend_lr(paper_ipc) · S / S_paper`` (S = (C − 1)·ipc for class-wise
  forgetting), the learning rate that gives the paper-scale per-cluster step ``lr / S``
  (``experiments.configs.base.cpu_blend_lr``).

Data: the CIFAR-shaped synthetic images (``experiments.seeds.synthetic_dataset``, 500 per class:
the CPU configs' subsample size), because the real datasets cannot be had here. Each class is
four smooth prototypes plus pixel noise, so clusters are tighter than CIFAR's; read the figures
as what the step size does to Blend's optimisation, not as CIFAR-10's numbers. Partition and
extractor as in a study (ConvNet-3 width 128, the seed's partition and extractor keys); forget
request: one class (class-wise, the paper's main scenario).

Columns: ``L0`` the matching loss at uniform weights (the cluster means); ``L12`` after the 12
iterations; ``drop`` = 1 − L12/L0; ``|w − 1/n|₁`` the mean over clusters of the L1 distance of
the normalised weights from uniform (0: the cluster mean; 2: all mass moved); ``neg`` the share
of negative normalised weights (the blend is then no longer a convex combination); ``max w`` the
largest normalised weight; ``guarded`` clusters that hit the Σw → 0 guard.

Usage: ``python bench/blend_lr.py [--seeds 2] [--configs cifar10,svhn]`` (each Blend of the
4,500 retain images takes minutes on 2 CPU cores; no timing is reported).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from experiments.condensation import convnet
from experiments.configs.base import NetSettings, cpu_blend_lr
from experiments.seeds import partition_keys, seed_keys, synthetic_dataset
from jaxunlearn.condense import blend_clusters, blend_lr, split_free_residual
from jaxunlearn.models import batched_features, init_fn_for
from jaxunlearn.partition import partition_by_class

# (config, CPU ipc, paper ipc): experiments/configs/{cifar10,svhn,cinic10}.py
CONFIGS = (("cifar10", 100, 1000), ("svhn", 11, 100), ("cinic10", 44, 800))
C = 10


def _final_loss(net, phi, x, cid, free, images):
    """L = mean_s mean_d (φ(x̃_s) − μ_s)², μ_s the mean embedding of cluster s's members."""
    feats = np.asarray(batched_features(net.apply, phi, jnp.asarray(x), 512, "features"))
    pos = {c: i for i, c in enumerate(free)}
    mu = np.zeros((free.size, feats.shape[1]))
    n = np.zeros(free.size)
    for i, c in enumerate(cid):
        if c in pos:
            mu[pos[c]] += feats[i]
            n[pos[c]] += 1
    mu /= n[:, None]
    fb = np.asarray(batched_features(net.apply, phi, images, 512, "features"))
    return float(np.mean(np.mean((fb - mu) ** 2, axis=1)))


def measure(ipc: int, lr: float, seed: int, ds, net, part, forget_class: int) -> dict:
    y = ds.y_train
    forget_idx = np.flatnonzero(y == forget_class)
    retain_idx = np.flatnonzero(y != forget_class)
    split = split_free_residual(part.cluster_ids, forget_idx, retain_idx, C * ipc)
    key = seed_keys(seed)["extractor"]
    init = init_fn_for(net, ds.x_train.shape[1:])
    out = blend_clusters(net.apply, init, ds.x_train, y, split.blend_cluster_ids,
                         split.free_clusters, key=key, iterations=12, lr=lr, momentum=0.5,
                         ipc=ipc)
    phi = init(key)
    l12 = _final_loss(net, phi, ds.x_train, np.asarray(split.blend_cluster_ids),
                      np.asarray(split.free_clusters), out.images)
    w, idx = out.weights, out.member_idx
    member = idx >= 0
    n = member.sum(axis=1, keepdims=True)
    dev = np.where(member, np.abs(w - 1.0 / n), 0.0).sum(axis=1)
    l0 = float(out.loss_history[0])
    return dict(S=int(split.n_free), lr=lr, step=lr / split.n_free, L0=l0, L12=l12,
                drop=1 - l12 / l0, dev=float(dev.mean()),
                neg=float((w[member] < 0).mean()), wmax=float(w[member].max()),
                guarded=out.n_guarded)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--per_class", type=int, default=500)
    p.add_argument("--configs", default=",".join(c for c, _, _ in CONFIGS),
                   help="comma-separated subset of " + ", ".join(c for c, _, _ in CONFIGS))
    args = p.parse_args()
    chosen = args.configs.split(",")
    print(f"{'config':8} {'ipc':>4} {'seed':>4} {'lr rule':10} {'S':>5} {'lr':>9} {'lr/S':>8} "
          f"{'L0':>9} {'L12':>9} {'drop':>7} {'|w-1/n|1':>8} {'neg':>6} {'max w':>6} "
          f"{'guarded':>7}")
    for name, ipc, paper_ipc in CONFIGS:
        if name not in chosen:
            continue
        for seed in range(args.seeds):
            ds = synthetic_dataset(args.per_class, 1, seed=seed)
            net = convnet(NetSettings(), ds.x_train.shape[1:], C)
            psi_key, km_key = partition_keys(seed_keys(seed))
            psi = init_fn_for(net, ds.x_train.shape[1:])(psi_key)
            part = partition_by_class(net.apply, psi, ds.x_train, ds.y_train, num_classes=C,
                                      ipc=ipc, key=km_key)
            # class-wise: S = (C − 1)·ipc free clusters here and at the paper's scale
            rules = {"small": blend_lr(ipc), "paper_step": cpu_blend_lr(paper_ipc, ipc)}
            for rule, lr in rules.items():
                r = measure(ipc, lr, seed, ds, net, part, forget_class=seed % C)
                print(f"{name:8} {ipc:>4} {seed:>4} {rule:10} {r['S']:>5} {r['lr']:>9.4g} "
                      f"{r['step']:>8.4f} {r['L0']:>9.4g} {r['L12']:>9.4g} {r['drop']:>7.1%} "
                      f"{r['dev']:>8.4f} {r['neg']:>6.1%} {r['wmax']:>6.3f} {r['guarded']:>7}",
                      flush=True)


if __name__ == "__main__":
    main()
