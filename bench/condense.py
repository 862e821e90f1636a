"""Benchmark of Blend condensation stages against their floors (docs/method.md §3, §6 "Time").

Data: CIFAR-shaped synthetic images (10 classes × N images of 32×32×3, each class a continuum
between smooth prototypes, plus noise). Model: the ConvNet-3 (width 128, 2048-d embedding).
Each stage is timed with compilation apart (ahead-of-time ``lower().compile()``,
``block_until_ready``):

- embedding of every image by an untrained ConvNet; floor: a plain host loop of jitted batched
  forwards of the same images;
- per-class k-means with ``ipc`` clusters; floor: its distance products alone (one
  ``[n_c, d] × [d, ipc]`` matmul + argmin + centroid ``segment_sum`` per Lloyd step, one
  ``[n_c, d] × [d, trials]`` product per k-means++ seed);
- free/residual split for class-wise forgetting of class 0;
- Blend of the free clusters end to end (12 iterations), and one Blend iteration on a chunk
  against its floor: a forward + input-gradient pass of the same number of images through the
  same network.

Ratios come from interleaved repeats (A, B, A, B, ...) and the fastest of each, because the
machine's 2 cores are shared and timings move ±20% run to run.

Usage::

    python bench/condense.py                     # 10 × 500 images, ipc 100 (a few minutes)
    python bench/condense.py --n 5000 --ipc 1000 --repeats 1   # the paper's scale

Writes ``bench/results/condense_<n>_<ipc>.json`` and prints a table. Targets: embedding and each
Blend iteration within 1.3× of their floors; k-means dominated by its distance products.
"""

from __future__ import annotations

if __name__ == "__main__":
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory()  # before JAX starts; CIFAR-shaped work, so the single arena too

import argparse
import json
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.condense import (
    blend_clusters,
    blend_prepare_jitted,
    blend_step_jitted,
    chunk_layout,
    init_extractors,
    split_free_residual,
)
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import KMeansOptions, embed_jitted, kmeans_by_class
from jaxunlearn.timing import timed


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def synthetic_cifar(key: jax.Array, n_per_class: int, num_classes: int = 10):
    """Class-structured 32×32×3 images with a continuum inside each class.

    Each image mixes two of its class's 4 smooth prototypes with a random weight, plus smooth
    (8×8 upsampled) and pixel noise, so k-means has real work to do (not 4 tight blobs).
    """
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    up = lambda a: a.repeat(4, axis=-3).repeat(4, axis=-2)  # 8×8 → 32×32
    protos = up(rng.normal(size=(num_classes, 4, 8, 8, 3)).astype(np.float32))
    y = np.repeat(np.arange(num_classes, dtype=np.int32), n_per_class)
    n = y.size
    a, b = rng.integers(0, 4, n), rng.integers(0, 4, n)
    t = rng.random(n, dtype=np.float32)[:, None, None, None]
    x = np.empty((n, 32, 32, 3), np.float32)
    for i in range(0, n, 5000):  # in slices: bounded temporaries at 50k images
        j = min(i + 5000, n)
        x[i:j] = t[i:j] * protos[y[i:j], a[i:j]] + (1 - t[i:j]) * protos[y[i:j], b[i:j]]
        x[i:j] += 0.5 * up(rng.standard_normal((j - i, 8, 8, 3), dtype=np.float32))
        x[i:j] += 0.3 * rng.standard_normal((j - i, 32, 32, 3), dtype=np.float32)
    return x, y


def _wall(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def ab(fa, fb, repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` interleaved runs of ``fa`` and ``fb`` (both already compiled)."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_wall(fa))
        tb.append(_wall(fb))
    return min(ta), min(tb)


def forward_loop(apply_fn, params, x_dev, batch_size: int):
    """A compiled plain loop of batched forwards over ``x_dev``: the embedding floor."""
    fwd = jax.jit(lambda p, b: apply_fn(p, b, method="features"))
    n = x_dev.shape[0]
    batches = [x_dev[i : i + batch_size] for i in range(0, n, batch_size)]
    for b in {b.shape[0]: b for b in batches}.values():
        jax.block_until_ready(fwd(params, b))  # compile every batch shape first

    def run():
        return [fwd(params, b) for b in batches]

    return run


def kmeans_floor(feats, y, ipc: int, lloyd_steps: int, seeds: int):
    """A compiled program of k-means' distance products alone (one class's shapes).

    ``lloyd_steps`` × (``[n_c, d] × [d, ipc]`` matmul + argmin + centroid ``segment_sum``) and
    ``seeds`` × ``[n_c, d] × [d, trials]`` products, in ``fori_loop``s like the real thing.
    """
    n_c = int(np.bincount(y).max())
    xc = feats[:n_c]
    lab = jnp.asarray(np.arange(n_c) % ipc, jnp.int32)
    trials = 2 + int(np.log(ipc))

    @jax.jit
    def products(x, lab):
        x_sq = jnp.sum(x * x, 1)

        def lloyd(i, c):
            d = x_sq[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, 1)[None]
            lab_i = (jnp.argmin(d, 1) + lab) % ipc  # keep the argmin live
            return jax.ops.segment_sum(x, lab_i, ipc) / n_c

        def seed(i, acc):
            c = jax.lax.dynamic_slice_in_dim(x, i % (n_c - trials), trials)
            return acc + jnp.sum(x_sq[:, None] - 2.0 * x @ c.T)

        c = jax.lax.fori_loop(0, lloyd_steps, lloyd, x[:ipc])
        return c, jax.lax.fori_loop(0, seeds, seed, 0.0)

    jax.block_until_ready(products(xc, lab))
    return lambda: products(xc, lab)


def ott_kmeans(feats, y, num_classes: int, ipc: int, key) -> dict:
    """The library's ``backend="ott"`` (ott-jax's k-means, n_init=1) on the same features."""
    out = kmeans_by_class(feats, y, num_classes=num_classes, ipc=ipc, key=key,
                          kmeans=KMeansOptions(backend="ott"))
    return {"inertia": out.inertia, "run_s": out.timings["kmeans_s"],
            "compile_s": out.timings["kmeans_compile_s"],
            "iterations": out.n_iterations.tolist()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="images per class")
    ap.add_argument("--ipc", type=int, default=100)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=500, help="images per embedding forward")
    ap.add_argument("--chunk-size", type=int, default=1024, help="Blend clusters per chunk")
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats for ratios")
    ap.add_argument("--blend-runs", type=int, default=3, help="Blend runs (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-ott", action="store_true", help="also time ott-jax's k-means")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    R = args.repeats

    root = jax.random.key(args.seed)
    k_data, k_psi, k_km, k_phi = jax.random.split(root, 4)
    t0 = time.perf_counter()
    x, y = synthetic_cifar(k_data, args.n, args.classes)
    x_dev = jnp.asarray(x)
    del x
    data_s = time.perf_counter() - t0
    n = x_dev.shape[0]
    model = build_model("convnet", args.classes, width=args.width, depth=args.depth)
    init_fn = init_fn_for(model, x_dev.shape[1:])
    psi = jax.jit(init_fn)(k_psi)
    rec: dict = {
        "config": vars(args) | {"n_total": n},
        "platform": {"jax": jax.__version__, "backend": jax.default_backend(),
                     "devices": len(jax.devices()), "cpus": os.cpu_count(),
                     "machine": platform.machine(),
                     "loadavg_start": os.getloadavg()[0]},
        "data_s": data_s,
    }

    # 1. Embedding: the pipeline's run, then interleaved repeats against the floor.
    static = dict(apply_fn=model.apply, batch_size=args.batch_size, method="features")
    feats, embed_s, embed_c = timed(embed_jitted, psi, x_dev, **static)
    emb = embed_jitted.lower(psi, x_dev, **static).compile()
    floor_run = forward_loop(model.apply, psi, x_dev, args.batch_size)
    e_best, f_best = ab(lambda: emb(psi, x_dev), floor_run, R)
    rec["embed"] = {"run_s": embed_s, "compile_s": embed_c, "best_s": e_best,
                    "floor_s": f_best, "ratio": e_best / f_best, "images_per_s": n / embed_s,
                    "dim": int(feats.shape[1]), "peak_gib": _peak_gib()}
    print(f"embed {embed_s:.2f}s (best {e_best:.2f}, floor {f_best:.2f})", flush=True)

    # 2. k-means (repeats reuse the compiled program; same key, same result), interleaved
    # with a program of its distance products alone at the same iteration counts.
    part = kmeans_by_class(feats, y, num_classes=args.classes, ipc=args.ipc, key=k_km)
    lloyd_steps = int(np.sum(part.n_iterations + 1))  # + the final assignment
    floor_run = kmeans_floor(feats, y, args.ipc, lloyd_steps, args.ipc * args.classes)
    km_runs, floor_runs = [part.timings["kmeans_s"]], [_wall(floor_run)]
    for _ in range(R - 1):
        km_runs.append(kmeans_by_class(feats, y, num_classes=args.classes, ipc=args.ipc,
                                       key=k_km).timings["kmeans_s"])
        floor_runs.append(_wall(floor_run))
    km_best, floor_s = min(km_runs), min(floor_runs)
    rec["kmeans"] = {"run_s": part.timings["kmeans_s"], "best_s": km_best,
                     "compile_s": part.timings["kmeans_compile_s"], "inertia": part.inertia,
                     "n_iterations": part.n_iterations.tolist(),
                     "converged": int(part.converged.sum()), "n_empty": part.n_empty,
                     "floor_s": floor_s, "products_share": floor_s / km_best,
                     "lloyd_steps": lloyd_steps, "points_per_s": n / km_best,
                     "peak_gib": _peak_gib()}
    print(f"kmeans {km_best:.2f}s (products {floor_s:.2f})", flush=True)
    if args.compare_ott:
        rec["kmeans"]["ott"] = ott_kmeans(feats, y, args.classes, args.ipc, k_km)
    del feats

    # 3. Split: class-wise forgetting of class 0.
    forget = np.flatnonzero(y == 0)
    retain = np.flatnonzero(y != 0)
    split = split_free_residual(part.cluster_ids, forget, retain, args.classes * args.ipc)
    rec["split"] = {"run_s": split.timings["split_s"], "n_free": split.n_free,
                    "n_residual": split.n_residual, "n_empty_free": split.n_empty_free,
                    "n_retain": split.n_retain, "reduced_size": split.reduced_size}

    # 4. Blend end to end, --blend-runs times (same key, same result): each run's wall clock
    # beside its parts timed inside the same run (targets, SGD steps, finish).
    ids, free = split.blend_cluster_ids, split.free_clusters
    runs = []
    for r in range(args.blend_runs):
        blend = blend_clusters(model.apply, init_fn, x_dev, y, ids, free, key=k_phi,
                               ipc=args.ipc, iterations=args.iterations,
                               chunk_size=args.chunk_size, batch_size=args.batch_size)
        t = blend.timings
        inner = t["blend_targets_s"] + t["blend_iterations_s"]
        runs.append({"run_s": t["blend_s"], "targets_s": t["blend_targets_s"],
                     "iterations_s": t["blend_iterations_s"], "finish_s": t["blend_finish_s"],
                     "iteration_s": t["blend_iteration_s"], "gap_s": t["blend_s"] - inner,
                     "run_over_parts": t["blend_s"] / inner})
        print(f"blend run {r}: {t['blend_s']:.2f}s = targets {t['blend_targets_s']:.2f} + "
              f"iterations {t['blend_iterations_s']:.2f} (median step "
              f"{np.median(t['blend_iteration_s']):.2f}) + finish {t['blend_finish_s']:.2f} + "
              f"other {t['blend_s'] - inner - t['blend_finish_s']:.2f}", flush=True)
    peak_blend = _peak_gib()

    # One Blend iteration (chunk 0) against forward + input-gradient of as many images, and
    # the chunk's target computation against a plain forward of its members.
    chunk = min(args.chunk_size, split.n_free)
    lay = chunk_layout(ids, free, chunk)
    idx, seg, mmask, counts_qk, cmask = (
        jnp.asarray(a[0]) for a in (lay.idx, lay.seg, lay.mmask, lay.counts_qk, lay.cmask))
    ext = init_extractors(k_phi[None], init_fn=init_fn)
    prep_args = (ext, x_dev, idx, seg, mmask, counts_qk)
    prep = blend_prepare_jitted.lower(*prep_args, apply_fn=model.apply,
                                      batch_size=args.batch_size, method="features").compile()
    xm, mu, w = prep(*prep_args)
    sc = (jnp.float32(blend.lr), jnp.float32(0.5), jnp.float32(1.0 / split.n_free))
    step_args = lambda: (w + 0.0, jnp.zeros_like(w), jnp.int32(0), ext, xm, seg, mmask,
                         counts_qk, cmask, mu, *sc)  # fresh copies: w, buf are donated
    step = blend_step_jitted.lower(*step_args(), apply_fn=model.apply, weights="sum",
                                   method="features").compile()
    phi = jax.tree.map(lambda a: a[0], ext)
    imgs = x_dev[:chunk]

    @jax.jit
    def fwd_bwd(p, v):
        return jax.grad(lambda v: jnp.sum(jnp.square(model.apply(p, v, method="features"))))(v)

    jax.block_until_ready((step(*step_args()), fwd_bwd(phi, imgs)))
    it_best, it_floor = ab(lambda: step(*step_args()), lambda: fwd_bwd(phi, imgs), R)
    tgt_floor_run = forward_loop(model.apply, phi, xm, args.batch_size)
    prep_best, prep_floor = ab(lambda: prep(*prep_args), tgt_floor_run, R)
    m_total = int(split.free_sizes.sum())
    med = lambda k: float(np.median([r[k] for r in runs]))  # noqa: E731
    rec["blend"] = {"run_s": med("run_s"), "runs": runs, "targets_s": med("targets_s"),
                    "iterations_s": med("iterations_s"), "finish_s": med("finish_s"),
                    "run_over_parts": med("run_over_parts"),
                    "compile_s": blend.timings["blend_compile_s"],
                    "n_clusters": split.n_free, "n_members": m_total, "chunk_size": chunk,
                    "n_chunks": int(lay.idx.shape[0]), "chunk_members_padded": int(idx.shape[0]),
                    "iteration_chunk_s": it_best, "iteration_floor_s": it_floor,
                    "iteration_ratio": it_best / it_floor,
                    "prepare_chunk_s": prep_best, "prepare_floor_s": prep_floor,
                    "prepare_ratio": prep_best / prep_floor,
                    "lr": blend.lr, "loss_first": float(blend.loss_history[0]),
                    "loss_last": float(blend.loss_history[-1]), "n_guarded": blend.n_guarded,
                    "member_images_per_s": m_total / med("run_s"),
                    "peak_gib": peak_blend}
    rec["total_run_s"] = (embed_s + part.timings["kmeans_s"] + split.timings["split_s"]
                          + rec["blend"]["run_s"])
    rec["total_compile_s"] = (embed_c + part.timings["kmeans_compile_s"]
                              + blend.timings["blend_compile_s"])
    rec["peak_gib"] = _peak_gib()
    rec["platform"]["loadavg_end"] = os.getloadavg()[0]

    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"condense_{args.n}_{args.ipc}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=2)
    os.replace(tmp, out)  # atomic
    _print_table(rec, out)
    return rec


def _print_table(rec: dict, path: str) -> None:
    e, k, s, b = rec["embed"], rec["kmeans"], rec["split"], rec["blend"]
    cfg = rec["config"]
    print(f"\nBlend condensation, {cfg['classes']}×{cfg['n']} images 32×32×3, ipc {cfg['ipc']}, "
          f"ConvNet-{cfg['depth']} width {cfg['width']} (load avg "
          f"{rec['platform']['loadavg_start']:.1f}→{rec['platform']['loadavg_end']:.1f})")
    print(f"{'stage':<12}{'run s':>9}{'compile s':>11}{'best s':>9}{'floor s':>9}{'ratio':>7}"
          "  notes")
    print(f"{'embed':<12}{e['run_s']:>9.2f}{e['compile_s']:>11.2f}{e['best_s']:>9.2f}"
          f"{e['floor_s']:>9.2f}{e['ratio']:>7.2f}  {e['images_per_s']:.0f} images/s, "
          f"d={e['dim']}")
    print(f"{'k-means':<12}{k['run_s']:>9.2f}{k['compile_s']:>11.2f}{k['best_s']:>9.2f}"
          f"{k['floor_s']:>9.2f}{k['best_s'] / k['floor_s']:>7.2f}  products "
          f"{100 * k['products_share']:.0f}% of run, Lloyd iterations "
          f"{min(k['n_iterations'])}-{max(k['n_iterations'])}, empty {k['n_empty']}")
    if "ott" in k and "run_s" in k["ott"]:
        o = k["ott"]
        print(f"{'  ott-jax':<12}{o['run_s']:>9.2f}{o['compile_s']:>11.2f}{'':>25}  "
              f"n_init=1: inertia {o['inertia']:.4g} (ours {k['inertia']:.4g})")
    print(f"{'split':<12}{s['run_s']:>9.4f}{'-':>11}{'':>25}  free {s['n_free']}, residual "
          f"{s['n_residual']}, reduced {s['reduced_size']} of {s['n_retain']}")
    print(f"{'blend':<12}{b['run_s']:>9.2f}{b['compile_s']:>11.2f}{'':>25}  "
          f"{b['n_clusters']} clusters of {b['n_members']} images, {b['n_chunks']} chunk(s), "
          f"loss {b['loss_first']:.3g}→{b['loss_last']:.3g}; median of {len(b['runs'])} runs")
    print(f"{'  parts':<12}{b['targets_s'] + b['iterations_s']:>9.2f}{'':>11}{'':>25}  "
          f"targets {b['targets_s']:.2f} + iterations {b['iterations_s']:.2f}; run / parts "
          f"{b['run_over_parts']:.3f} (target <= 1.1), per run "
          + ", ".join(f"{r['run_over_parts']:.3f}" for r in b["runs"]))
    print(f"{'  iteration':<12}{'':>20}{b['iteration_chunk_s']:>9.2f}"
          f"{b['iteration_floor_s']:>9.2f}{b['iteration_ratio']:>7.2f}  one chunk of "
          f"{b['chunk_size']} clusters vs forward+input-grad of {b['chunk_size']} images")
    print(f"{'  targets':<12}{'':>20}{b['prepare_chunk_s']:>9.2f}{b['prepare_floor_s']:>9.2f}"
          f"{b['prepare_ratio']:>7.2f}  gather + forward of {b['chunk_members_padded']} "
          "(padded) members")
    print(f"total run {rec['total_run_s']:.2f} s, compile {rec['total_compile_s']:.2f} s, "
          f"peak RSS {rec['peak_gib']:.2f} GiB → {path}")


if __name__ == "__main__":
    main()
