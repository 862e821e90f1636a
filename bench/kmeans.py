"""Benchmark of the two k-means procedures of the Blend partition (docs/method.md §3.1).

``procedure="reference"`` (the default: DC_Unlearning's ``kmeans_pytorch``, plain k-means++,
stop when Σ‖Δc‖ < tol, random re-seed of empty clusters) against ``procedure="sklearn"``
(greedy k-means++ with 2 + ⌊ln k⌋ candidates, scikit-learn's relative tolerance, farthest-point
refill), on the same features and keys, per seed. Printed per set and procedure: inertia (mean
over seeds, and its ratio to the reference's), Lloyd iterations (mean over classes and seeds,
and the largest), classes stopped by the tolerance, empty clusters, and wall times with
compilation excluded (``kmeans_by_class``'s ``kmeans_s``, which blocks until ready): the whole
k-means, and its seeding alone (the same call with ``max_iterations=0``: seeds + one
assignment). Procedures run A/B interleaved (A, B, A, B, ... within each seed), and times are
medians over seeds × repeats, since this 2-core machine's timings move ±20% run to run.

Sets:

- ``digits``: the embedded study's partition exactly (configs/digits.py: the seed's training
  split, ψ = a random ConvNet from the seed's partition key, the seed's k-means key; ipc 16);
- ``synthetic``: the CIFAR-shaped synthetic set at the CPU scale of configs/cifar10.py
  (``--scale cpu``: 500 training images per class before the study's splits, ConvNet-3 width
  128 → 2048-d, ipc 100), same pipeline as the study;
- ``random``: Gaussian features with a low-rank class structure (``x = A_c z + 0.5 ε``,
  ``z ~ N(0, I_16)``): ``--random CxNxD:K`` specs, by default 10 × 500 × 2048 with k = 100;
  ``--paper`` adds the paper's 10 × 5,000 × 2048 with k = 1000 (minutes on 2 CPU cores).

Usage::

    python bench/kmeans.py                        # digits, synthetic, random 10x500x2048:100
    python bench/kmeans.py --paper                # + random 10x5000x2048:1000
    python bench/kmeans.py --sets random --random 2x5000x2048:1000   # 2 classes of the paper's
    python bench/kmeans.py --small                # a quick check that it runs

Writes ``bench/results/kmeans.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from experiments.condensation import convnet
from experiments.configs import cifar10, digits
from experiments.seeds import load_study_dataset, partition_keys, seed_keys, seed_splits
from jaxunlearn.models import init_fn_for
from jaxunlearn.partition import KMeansOptions, embed, kmeans_by_class

PROCEDURES = ("reference", "sklearn")


def study_features(cfg, seed: int):
    """The features, labels and k-means key the study's partition of ``seed`` clusters."""
    ds = load_study_dataset(cfg)
    s = seed_splits(cfg, ds, seed)
    psi_key, km_key = partition_keys(seed_keys(seed))
    net = convnet(cfg.condense_net, s.train_x.shape[1:], s.num_classes)
    psi = init_fn_for(net, s.train_x.shape[1:])(psi_key)
    feats = jax.block_until_ready(embed(net.apply, psi, s.train_x))
    return feats, np.asarray(s.train_y), s.num_classes, km_key


def random_features(seed: int, classes: int, n: int, d: int, rank: int = 16):
    """``[classes * n, d]`` features: per class ``A_c z + 0.5 ε`` (a continuum, no blobs)."""
    rng = np.random.default_rng([seed, 11])
    a = rng.normal(size=(classes, rank, d)).astype(np.float32) / np.sqrt(rank)
    z = rng.normal(size=(classes, n, rank)).astype(np.float32)
    x = np.einsum("cnr,crd->cnd", z, a) + 0.5 * rng.normal(size=(classes, n, d)).astype(np.float32)
    y = np.repeat(np.arange(classes, dtype=np.int32), n)
    return x.reshape(classes * n, d), y, classes, jax.random.key(seed)


def run_set(name: str, make, ipc: int, seeds: list[int], repeats: int) -> dict:
    """Both procedures on the set ``make(seed)`` for every seed, A/B interleaved."""
    rows = {p: {"inertia": [], "iterations": [], "converged": [], "n_classes": 0, "n_empty": [],
                "kmeans_s": [], "seed_s": [], "compile_s": []} for p in PROCEDURES}
    for seed in seeds:
        feats, y, num_classes, key = make(seed)
        kw = dict(num_classes=num_classes, ipc=ipc, key=key)
        if seed == seeds[0]:  # compile and warm up (first dispatches) before any timing
            for p in PROCEDURES:
                out = kmeans_by_class(feats, y, **kw, kmeans=KMeansOptions(procedure=p))
                kmeans_by_class(feats, y, **kw, kmeans=KMeansOptions(procedure=p, max_iterations=0))
                rows[p]["compile_s"].append(out.timings["kmeans_compile_s"])
        for rep in range(repeats):
            for p in PROCEDURES:  # A, B within each repeat: both see the same machine load
                out = kmeans_by_class(feats, y, **kw, kmeans=KMeansOptions(procedure=p))
                seeding = kmeans_by_class(feats, y, **kw,
                                          kmeans=KMeansOptions(procedure=p, max_iterations=0))
                r = rows[p]
                r["kmeans_s"].append(out.timings["kmeans_s"])
                r["seed_s"].append(seeding.timings["kmeans_s"])
                if rep == 0:  # same key, same result: the numbers once per seed
                    r["inertia"].append(out.inertia)
                    r["iterations"] += out.n_iterations.tolist()
                    r["converged"].append(int(out.converged.sum()))
                    r["n_classes"] += num_classes
                    r["n_empty"].append(out.n_empty)
        n_points, dim = feats.shape
        del feats
    summary = {"set": name, "n": int(n_points), "dim": int(dim), "ipc": ipc, "seeds": seeds,
               "repeats": repeats, "procedures": {}}
    ref_inertia = np.array(rows["reference"]["inertia"])
    for p, r in rows.items():
        inertia = np.array(r["inertia"])
        summary["procedures"][p] = {
            "inertia_mean": float(inertia.mean()),
            "inertia_per_seed": inertia.tolist(),
            "inertia_ratio_to_reference": float(np.mean(inertia / ref_inertia)),
            "iterations_mean": float(np.mean(r["iterations"])),
            "iterations_max": int(np.max(r["iterations"])),
            "converged": f"{sum(r['converged'])}/{r['n_classes']}",
            "n_empty_mean": float(np.mean(r["n_empty"])),
            "kmeans_s_median": float(np.median(r["kmeans_s"])),
            "seed_s_median": float(np.median(r["seed_s"])),
            "kmeans_s": r["kmeans_s"], "seed_s": r["seed_s"],
            "compile_s": float(r["compile_s"][0]),  # of the full k-means, once per set
        }
    return summary


def print_summary(s: dict) -> None:
    print(f"\n{s['set']}: {s['n']} points, dim {s['dim']}, ipc {s['ipc']}, seeds {s['seeds']}, "
          f"{s['repeats']} repeat(s)")
    print(f"  {'procedure':10} {'inertia':>12} {'/ref':>7} {'iters':>6} {'max':>4} "
          f"{'conv':>7} {'empty':>6} {'kmeans_s':>9} {'seed_s':>8}")
    for p, r in s["procedures"].items():
        print(f"  {p:10} {r['inertia_mean']:12.5g} {r['inertia_ratio_to_reference']:7.4f} "
              f"{r['iterations_mean']:6.1f} {r['iterations_max']:4d} {r['converged']:>7} "
              f"{r['n_empty_mean']:6.1f} {r['kmeans_s_median']:9.3f} {r['seed_s_median']:8.3f}",
              flush=True)


def _parse_spec(spec: str) -> tuple[int, int, int, int]:
    """``CxNxD:K`` → (classes, points per class, dim, k)."""
    try:
        shape, k = spec.split(":")
        c, n, d = (int(v) for v in shape.lower().split("x"))
        return c, n, d, int(k)
    except ValueError as e:
        raise SystemExit(f"--random expects specs like 10x500x2048:100; got {spec!r}") from e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="digits,synthetic,random",
                    help="comma-separated: digits, synthetic, random")
    ap.add_argument("--random", action="append", default=None, metavar="CxNxD:K",
                    help="a random-feature set (repeatable); default 10x500x2048:100")
    ap.add_argument("--paper", action="store_true", help="add random 10x5000x2048:1000")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (inertia: mean over them)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per seed and procedure")
    ap.add_argument("--small", action="store_true",
                    help="quick check: 1 seed, 1 repeat, digits + a 3x200x256:20 random set")
    ap.add_argument("--out", default="bench/results/kmeans.json")
    args = ap.parse_args()

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    specs = args.random or ["10x500x2048:100"]
    if args.paper:
        specs.append("10x5000x2048:1000")
    seeds, repeats = list(range(args.seeds)), args.repeats
    if args.small:
        sets = [s for s in sets if s != "synthetic"]
        specs, seeds, repeats = ["3x200x256:20"], [0], 1
    for s in sets:
        if s not in ("digits", "synthetic", "random"):
            raise SystemExit(f"--sets: unknown set {s!r} (digits, synthetic, random)")

    rec = {"platform": {"jax": jax.__version__, "backend": jax.default_backend(),
                        "cpus": os.cpu_count(), "machine": platform.machine(),
                        "loadavg_start": os.getloadavg()[0]},
           "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "sets": []}
    if "digits" in sets:
        cfg = digits.get_config()
        rec["sets"].append(run_set("digits", lambda s: study_features(cfg, s), cfg.ipc, seeds,
                                   repeats))
        print_summary(rec["sets"][-1])
    if "synthetic" in sets:
        cfg = cifar10.get_config(scale="cpu")
        cfg.dataset = "synthetic"
        rec["sets"].append(run_set("synthetic (cifar10 --scale cpu)",
                                   lambda s: study_features(cfg, s), cfg.ipc, seeds, repeats))
        print_summary(rec["sets"][-1])
    if "random" in sets:
        for spec in specs:
            c, n, d, k = _parse_spec(spec)
            rec["sets"].append(run_set(f"random {spec}",
                                       lambda s, c=c, n=n, d=d: random_features(s, c, n, d), k,
                                       seeds, repeats))
            print_summary(rec["sets"][-1])
    rec["platform"]["loadavg_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
