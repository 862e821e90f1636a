"""One GPU check at the paper's sizes: each stage's run and compile time beside the paper's.

A timing check at the paper's sizes on synthetic data, for the day a GPU is lent (about 15
minutes of GPU time, no network): NOT a reproduction of the paper's accuracy or MIA numbers.
Data: CIFAR-shaped synthetic images (``experiments.seeds.synthetic_dataset``): 10 classes × 5,000
training images 32×32×3 (50,000, no validation slice) and 10 × 1,000 test images, of which the
stratified 70% is the unseen pool (``test70``, as the studies use: 7,000 images, 700 of the
forgotten class). Class 0 is forgotten: 45,000 retain and 5,000 forget images. The model is a
freshly initialised ResNet-18 (width 64): unlearning time does not depend on its weights, so it is
not trained. Each stage runs through the library as the studies run it, and is timed with its
compilation apart (``block_until_ready``; ahead-of-time compilation in the library):

- features: the random, never-trained ConvNet-3 ψ (width 128) embeds the 50,000 images;
- k-means: 1,000 clusters per class (``partition_by_class``, the reference procedure);
- split: free / residual clusters of the forget request (``condense``);
- Blend: 12 iterations over the free clusters, learning rate ``blend_lr(ipc)`` (the reference's
  rule; ``BlendSettings`` defaults), a fixed random ConvNet-3 φ;
- A-CF epoch on the full retain set (45,000 images) and on the reduced retain set (the residual,
  i.e. retain images of clusters the forget class touches, kept raw, plus one Blend image per free
  cluster): ``make_method("a_cf")`` (Adam, one epoch, batch 64) through ``run_method``;
- CF epoch on the full retain set: ``make_method("cf", epochs=1)`` (SGD, batch 64).

It prints the device kind and count, the jax version, one progress line per stage with the
elapsed wall clock (flushed), a table of run and compile seconds with the peak device memory
after each stage and the paper's GPU figures beside them (k-means 5.58 s, Blend 47.8 s, A-CF
75.8 s → 16.0 s: "paper (CIFAR-10, ResNet-18, author's GPU)", not this run's), and the end-to-end
sums without and with Blend. A stage that fails prints one line (its traceback goes to stderr)
and the next stage runs; stages that need its output are skipped; the exit status is 1 if any
stage failed or was skipped. The JSON record is rewritten after every stage.

Usage, from the root of the checkout (it puts the checkout on ``sys.path`` itself: no install
needed; ott-jax, mlxtend, tensorflow, matplotlib and tqdm are never imported)::

    python bench/gpu_check.py 2>&1 | tee gpu_check.log   # GPU: paper sizes, ≤ 8 min on one H100
    python bench/gpu_check.py --size tiny                 # CPU: toy sizes (the test), ≈ 20 s

``--size tiny`` runs the same stages on 10 × 40 images of 16×16×3, ipc 4, a ConvNet-2 of width 16
as the model and ConvNet-3s of width 16 as ψ and φ (``tests/test_gpu_check.py`` runs it with
those modules made unimportable).

With the reference beside it: ``--reference DIR`` (a checkout of algebraicdianuj/DC_Unlearning,
copied to the GPU machine beforehand) runs, after our stages, ``bench/gpu_check_reference.py``
with ``--ref_python`` (default: this interpreter; it needs torch, which this process never
imports) in a child process on the same device (cuda when JAX runs on a GPU, else cpu). The child
imports the reference's modules unchanged and times its A-CF epoch on the full and on the
reduced retain set with our sizes, model shape and batch size; the table then gets rows
"reference A-CF epoch, full retain" and "reference A-CF epoch, reduced retain" with our time and
the ratio ours / reference (< 1: ours is faster), and the JSON a ``reference`` block. The child
gets our allocator settings (``GLIBC_TUNABLES``, what ``jaxunlearn.hostmem`` does for us with
mallopt). If it fails (no torch, a bad checkout) one line says why and that the reference did not
run; the exit status stays that of our stages. On a GPU this process keeps JAX's memory pool
(75% of the device by default) while the child runs: the child records the free memory it saw.
It adds about the reference's two epochs (the paper's GPU: 75.8 + 16.0 s) and its data set-up::

    python bench/gpu_check.py --reference DC_Unlearning 2>&1 | tee gpu_check.log
    python bench/gpu_check.py --size tiny --reference DC_Unlearning --ref_python venv/bin/python

It uses one GPU (``CUDA_VISIBLE_DEVICES=0`` unless set; ``--all_devices`` to use every visible
device through the library's data-parallel mesh). Writes ``bench/results/gpu_check_<size>.json``
(``--out`` sets the folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout's own packages, whether or not jaxunlearn is installed (the GPU image has none).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    import os as _os

    if "--all_devices" not in sys.argv[1:]:
        _os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # the paper's one GPU
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory()  # before JAX starts; CIFAR-shaped work, so the single arena too

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

import jaxunlearn
from experiments.configs.base import BlendSettings
from experiments.io import atomic_write
from experiments.seeds import partition_keys, seed_keys, synthetic_dataset
from jaxunlearn.condense import condense
from jaxunlearn.data import make_splits
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import KMeansOptions, partition_by_class
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method

FORGET_CLASS = 0

SIZES = {
    # the paper's CIFAR-10 scale: 10 × 5,000 training images, ipc 1000, ResNet-18
    "paper": dict(train_per_class=5000, test_per_class=1000, image=(32, 32, 3), ipc=1000,
                  model=("resnet18", {"width": 64}), psi_width=128),
    # the CPU test: the same pipeline at toy sizes, 16×16 images, a ConvNet-2 (a ResNet-18 of
    # width 8 took ≈ 11 s to compile per unlearning program on 2 CPU cores, and there are 3)
    "tiny": dict(train_per_class=40, test_per_class=10, image=(16, 16, 3), ipc=4,
                 model=("convnet", {"depth": 2, "width": 16}), psi_width=16),
}


def model_label(size: dict) -> str:
    name, kw = size["model"]
    return {"resnet18": "ResNet-18", "convnet": "ConvNet"}[name] + " (" + ", ".join(
        f"{k} {v}" for k, v in kw.items()) + ")"


PAPER_LABEL = "paper (CIFAR-10, ResNet-18, author's GPU)"
# The paper's GPU figures (seconds), keyed by the row or sum they stand beside.
PAPER_S = {"features_kmeans": 5.58, "blend": 47.8, "a_cf_full": 75.8, "a_cf_reduced": 16.0}
PAPER_S["with_blend"] = PAPER_S["features_kmeans"] + PAPER_S["blend"] + PAPER_S["a_cf_reduced"]
PAPER_S["without_blend"] = PAPER_S["a_cf_full"]

# (stage, what it does, the rows it fills, the stages whose output it needs)
STAGES = (
    ("data", "data: synthetic images, splits, device put, model init", ("data",), ()),
    ("partition", "features + k-means", ("features", "kmeans"), ("data",)),
    ("condense", "split + Blend", ("split", "blend"), ("data", "partition")),
    ("a_cf_full", "A-CF epoch, full retain set", ("a_cf_full",), ("data",)),
    ("a_cf_reduced", "A-CF epoch, reduced retain set", ("a_cf_reduced",), ("data", "condense")),
    ("cf_full", "CF epoch, full retain set", ("cf_full",), ("data",)),
)
ROWS = tuple(row for _, _, rows, _ in STAGES for row in rows)
ROW_LABELS = {
    "data": "data + model init",
    "features": "features (random ConvNet-3 psi)",
    "kmeans": "k-means (ipc per class)",
    "split": "split free / residual",
    "blend": f"Blend ({BlendSettings().iterations} iterations)",
    "a_cf_full": "A-CF epoch, full retain",
    "a_cf_reduced": "A-CF epoch, reduced retain",
    "cf_full": "CF epoch, full retain",
}


# --reference: the reference's A-CF epoch in torch, in a child process
REF_HARNESS = Path(__file__).resolve().with_name("gpu_check_reference.py")
# what jaxunlearn.hostmem.retain_freed_memory() does for us with mallopt (one arena, no mmap for
# large blocks, no trimming), given to the reference's process (bench/side_by_side.py's FAIR_GLIBC)
FAIR_GLIBC = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
              "glibc.malloc.trim_threshold=68719476736")
REF_TIMEOUT_S = 3600
REF_ROWS = {"a_cf_full": "reference A-CF epoch, full retain",
            "a_cf_reduced": "reference A-CF epoch, reduced retain"}


def device_memory() -> dict[str, int] | None:
    """Device 0's allocator statistics (``peak_bytes_in_use`` ...), None where not reported."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
            if k in stats}


def _mib(n: int | None, unit: str = "") -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}{unit}"


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------------------------------------
# The stages: each reads and extends ``ctx`` and returns its rows ``{row: fields}``.


def stage_data(ctx: dict, size: dict) -> dict:
    t0 = time.perf_counter()
    ds = synthetic_dataset(size["train_per_class"], size["test_per_class"], shape=size["image"])
    s = make_splits(ds, unseen_pool="test70", unseen_fraction=0.7, val_fraction=0.0, seed=0)
    forget_idx = np.flatnonzero(s.train_y == FORGET_CLASS)
    retain_idx = np.flatnonzero(s.train_y != FORGET_CLASS)
    keys = seed_keys(0)
    x_dev = jax.block_until_ready(jax.device_put(s.train_x))  # on the device once
    name, kw = size["model"]
    model = build_model(name, s.num_classes, **kw)
    t1 = time.perf_counter()
    init = jax.jit(init_fn_for(model, size["image"])).lower(keys["init"]).compile()
    init_compile_s = time.perf_counter() - t1
    params = jax.block_until_ready(init(keys["init"]))
    ctx.update(splits=s, x_dev=x_dev, forget_idx=forget_idx, retain_idx=retain_idx, keys=keys,
               model=model, params=params,
               psi_net=build_model("convnet", s.num_classes, depth=3, width=size["psi_width"]))
    ctx["setup"].update({
        "train": int(s.train_y.size), "retain": int(retain_idx.size),
        "forget": int(forget_idx.size), "forget_class": FORGET_CLASS,
        "unseen_pool": int(s.unseen_y.size),
        "unseen_of_forget_class": int(np.sum(s.unseen_y == FORGET_CLASS)),
        "image": list(size["image"]), "ipc": size["ipc"],
        "model": f"{model_label(size)}, freshly initialised (timings only)",
        "psi_phi": f"convnet depth 3 width {size['psi_width']}, random, never trained",
        "data": "experiments.seeds.synthetic_dataset (synthetic, class-structured)",
    })
    return {"data": {"run_s": time.perf_counter() - t0 - init_compile_s,
                     "compile_s": init_compile_s}}


def stage_partition(ctx: dict, size: dict) -> dict:
    s, net = ctx["splits"], ctx["psi_net"]
    psi_key, kmeans_key = partition_keys(ctx["keys"])
    psi = jax.jit(init_fn_for(net, size["image"]))(psi_key)
    part = partition_by_class(net.apply, psi, ctx["x_dev"], s.train_y,
                              num_classes=s.num_classes, ipc=size["ipc"], key=kmeans_key,
                              kmeans=KMeansOptions())
    ctx["partition"] = part
    t = part.timings
    return {"features": {"run_s": t["embed_s"], "compile_s": t["embed_compile_s"]},
            "kmeans": {"run_s": t["kmeans_s"], "compile_s": t["kmeans_compile_s"],
                       "iterations_max": int(np.max(part.n_iterations)),
                       "converged_classes": int(np.sum(part.converged)),
                       "empty_clusters": int(part.n_empty)}}


def stage_condense(ctx: dict, size: dict) -> dict:
    s, net = ctx["splits"], ctx["psi_net"]
    out = condense(net.apply, init_fn_for(net, size["image"]), ctx["x_dev"], s.train_y,
                   ctx["partition"], ctx["forget_idx"], ctx["retain_idx"],
                   key=ctx["keys"]["extractor"], **dataclasses.asdict(BlendSettings()))
    ctx["reduced"] = (np.asarray(out.x), np.asarray(out.y))
    sizes = {k: float(v) if k == "reduction" else int(v) for k, v in out.sizes.items()}
    ctx["setup"]["reduced_retain"] = sizes
    blend = {"run_s": out.timings["blend_s"], "compile_s": out.timings["blend_compile_s"],
             "lr": None if out.blend is None else out.blend.lr, **sizes}
    return {"split": {"run_s": out.timings["split_s"], "compile_s": 0.0}, "blend": blend}


def _unlearn_data(ctx: dict, retain: tuple[Any, Any]) -> Any:
    s, f = ctx["splits"], ctx["forget_idx"]
    return make_unlearn_data(retain, (s.train_x[f], s.train_y[f]), (s.unseen_x, s.unseen_y),
                             s.num_classes)


def _full_data(ctx: dict) -> Any:
    if "full_data" not in ctx:  # built once, shared by the A-CF and CF epochs
        s, r = ctx["splits"], ctx["retain_idx"]
        ctx["full_data"] = _unlearn_data(ctx, (s.train_x[r], s.train_y[r]))
    return ctx["full_data"]


def run_epoch(ctx: dict, name: str, data: Any, salt: int, **hparams: Any) -> dict:
    """One run of method ``name`` (one epoch) on ``data`` from the model's parameters."""
    method = make_method(name, ctx["model"].apply, **hparams)
    out = run_method(method, ctx["params"], data, jax.random.fold_in(ctx["keys"]["unlearn"], salt))
    return {"run_s": out.unlearn_s, "compile_s": out.compile_s, "retain": int(data.retain.n),
            "steps": int(out.steps), "batch": method.batch_size, "epochs": method.epochs}


def stage_a_cf_full(ctx: dict, size: dict) -> dict:
    return {"a_cf_full": run_epoch(ctx, "a_cf", _full_data(ctx), 0)}


def stage_a_cf_reduced(ctx: dict, size: dict) -> dict:
    return {"a_cf_reduced": run_epoch(ctx, "a_cf", _unlearn_data(ctx, ctx["reduced"]), 1)}


def stage_cf_full(ctx: dict, size: dict) -> dict:
    return {"cf_full": run_epoch(ctx, "cf", _full_data(ctx), 2, epochs=1)}


RUNNERS: dict[str, Callable[[dict, dict], dict]] = {
    "data": stage_data, "partition": stage_partition, "condense": stage_condense,
    "a_cf_full": stage_a_cf_full, "a_cf_reduced": stage_a_cf_reduced, "cf_full": stage_cf_full,
}


# ---------------------------------------------------------------------------------------------
# The run: stages in order, each guarded, the record rewritten after each.


def _sums(rows: dict) -> dict:
    """End-to-end sums of run and compile seconds (None where a row is missing)."""
    parts = {"features_kmeans": ("features", "kmeans"),
             "without_blend": ("a_cf_full",),
             "with_blend": ("features", "kmeans", "split", "blend", "a_cf_reduced")}
    sums = {}
    for name, names in parts.items():
        ok = all(rows.get(r, {}).get("ok") for r in names)
        sums[name] = {"rows": list(names), "paper_s": PAPER_S[name],
                      "run_s": sum(rows[r]["run_s"] for r in names) if ok else None,
                      "compile_s": sum(rows[r]["compile_s"] for r in names) if ok else None}
    return sums


def _print_table(record: dict) -> None:
    rows, sums = record["stages"], record["sums"]
    head = f"{'stage':38s} {'run s':>9s} {'compile s':>10s} {'peak MiB':>9s}  {PAPER_LABEL}"
    print("\n" + head)
    print("-" * len(head))
    for row in ROWS:
        r = rows.get(row, {})
        paper = PAPER_S.get(row)
        label = ROW_LABELS[row] + (f" ({r['retain']:,} images)" if "retain" in r else "")
        if r.get("ok"):
            mem = r.get("device_memory") or {}
            print(f"{label:38s} {r['run_s']:9.2f} {r['compile_s']:10.2f} "
                  f"{_mib(mem.get('peak_bytes_in_use')):>9s}  {_seconds(paper)}")
        else:
            print(f"{label:38s} {r.get('status', 'not run'):>30s}  {_seconds(paper)}")
    print("-" * len(head))
    labels = {"features_kmeans": "features + k-means",
              "without_blend": "end to end without Blend",
              "with_blend": "end to end with Blend"}
    for name, label in labels.items():
        sm = sums[name]
        paper = f"{sm['paper_s']:.2f}" + ("  (k-means)" if name == "features_kmeans" else "")
        print(f"{label:38s} {_seconds(sm['run_s']):>9s} {_seconds(sm['compile_s']):>10s} "
              f"{'':9s}  {paper}")
    print("  peak MiB: device 0's peak allocation so far, read after the stage")
    print("  without Blend = A-CF epoch on the full retain set; with Blend = features + k-means "
          "+ split + Blend + A-CF epoch on the reduced set")
    print(f"  paper's with-Blend sum = k-means {PAPER_S['features_kmeans']} + Blend "
          f"{PAPER_S['blend']} + A-CF {PAPER_S['a_cf_reduced']} s; its figures are the author's "
          "GPU runs on real CIFAR-10, not this run")
    full, red = rows.get("a_cf_full", {}), rows.get("a_cf_reduced", {})
    if full.get("ok") and red.get("ok") and red["run_s"] > 0:
        print(f"  A-CF epoch full / reduced: {full['run_s'] / red['run_s']:.2f}x here, "
              f"{PAPER_S['a_cf_full'] / PAPER_S['a_cf_reduced']:.2f}x in the paper")
    peak = record["peak_device_bytes"]
    print(f"peak device memory (device 0, whole run): "
          f"{'n/a (not reported by this backend)' if peak is None else _mib(peak, ' MiB')}")


def run_reference(reference: str, ref_python: str, size_name: str, out_dir: str,
                  record: dict) -> dict:
    """The reference's A-CF epochs in a child process on our device, with our allocator settings.

    Returns the JSON ``reference`` block: ``ok``, the command, the child's record (``result``)
    and the ratios ours / reference; ``reason`` when it did not run.
    """
    rows = record["stages"]
    device = "cuda" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    batch = next((rows[r]["batch"] for r in REF_ROWS if "batch" in rows.get(r, {})), 64)
    out = os.path.join(out_dir, f"gpu_check_{size_name}_reference.json")
    cmd = [ref_python, str(REF_HARNESS), "--ref_dir", os.path.abspath(reference), "--size",
           size_name, "--device", device, "--batch_size", str(batch), "--out", out]
    reduced = record["setup"].get("reduced_retain", {}).get("n_reduced")
    if reduced is not None:
        cmd += ["--reduced", str(reduced)]
    block: dict[str, Any] = {"ok": False, "command": cmd, "device": device,
                             "glibc_tunables": FAIR_GLIBC, "result": None, "ratios": {}}
    print(f"reference: {' '.join(cmd)}\n  with GLIBC_TUNABLES={FAIR_GLIBC} (the allocator "
          "settings this process gives itself)"
          + ("" if reduced is not None else "; no reduced retain set (our condense did not run)"),
          flush=True)
    if os.path.exists(out):
        os.remove(out)  # never read a stale record
    tail: deque[str] = deque(maxlen=30)
    try:
        proc = subprocess.Popen(cmd, env=dict(os.environ, GLIBC_TUNABLES=FAIR_GLIBC),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
    except OSError as e:
        block["reason"] = f"cannot start {ref_python}: {e}"
        return block
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(REF_TIMEOUT_S, kill)
    timer.start()
    try:
        for line in proc.stdout:
            print("  | " + line.rstrip("\n"), flush=True)
            if line.strip():
                tail.append(line.strip())
        rc = proc.wait()
    finally:
        timer.cancel()
    try:
        with open(out) as f:
            block["result"] = json.load(f)
    except (OSError, ValueError):
        pass  # no record (or a torn one): the reason below says so
    if rc != 0:
        why = f"killed after {REF_TIMEOUT_S} s" if timed_out.is_set() else f"exit status {rc}"
        block["reason"] = f"{why}: {tail[-1] if tail else 'no output'}"[:400]
        return block
    if not (block["result"] or {}).get("ok"):
        block["reason"] = f"{out} has no finished record"
        return block
    block["ok"] = True
    ref_s = block["result"]["seconds"]
    for row in REF_ROWS:
        ours = rows.get(row, {})
        if ours.get("ok") and ref_s.get(row):
            block["ratios"][row] = {
                "ours_over_reference": ours["run_s"] / ref_s[row],
                "ours_with_compile_over_reference": (ours["run_s"] + ours["compile_s"])
                / ref_s[row]}
    return block


def _print_reference(record: dict) -> None:
    block = record["reference"]
    if not block["ok"]:
        print(f"\nreference: did NOT run ({block['reason']}); no ours / reference ratios")
        return
    res, rows = block["result"], record["stages"]
    cuda = res.get("cuda")
    print(f"\nreference ({res.get('ref_dir')}): torch {res.get('torch')}"
          f"{'' if cuda is None else f', CUDA {cuda}'}, {res.get('device')} "
          f"({res.get('device_name')}), {res.get('torch_num_threads')} threads; "
          f"{res.get('model')}")
    head = f"{'stage':52s} {'reference s':>11s} {'ours run s':>11s} {'ours/reference':>15s}"
    print(head)
    print("-" * len(head))
    for row, label in REF_ROWS.items():
        ref_s, ours = res["seconds"].get(row), rows.get(row, {})
        if row in res.get("retain", {}):
            label += f" ({res['retain'][row]:,} images)"
        ratio = block["ratios"].get(row, {}).get("ours_over_reference")
        print(f"{label:52s} {_seconds(ref_s):>11s} "
              f"{_seconds(ours['run_s']) if ours.get('ok') else 'not run':>11s} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>15s}")
    print("-" * len(head))
    print(f"  same device, same sizes, batch {res.get('batch_size')}; ours/reference < 1: ours "
          "is faster. Ours excludes its compile time; the reference's one-off set-up is paid by "
          "an untimed A-CF epoch over one batch "
          f"({_seconds(res['seconds'].get('warmup_one_batch'))} s)")
    stubbed = res.get("stubbed") or []
    print(f"  the reference ran with GLIBC_TUNABLES={res.get('glibc_tunables')}"
          + (f"; stubbed (unused by A-CF): {', '.join(stubbed)}" if stubbed else ""))


def _write(path: str, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=2, default=float) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--size", choices=sorted(SIZES), default="paper",
                   help="paper: 50,000 images, ipc 1000, ResNet-18 (GPU); tiny: the CPU test")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"),
                   help="folder of gpu_check_<size>.json")
    p.add_argument("--all_devices", action="store_true",
                   help="use every visible GPU (default: CUDA_VISIBLE_DEVICES=0 unless set)")
    p.add_argument("--reference", metavar="DIR",
                   help="a DC_Unlearning checkout: also time the reference's A-CF epochs in torch "
                        "on the same device (bench/gpu_check_reference.py, a child process)")
    p.add_argument("--ref_python", metavar="PY", default=sys.executable,
                   help="python with torch for --reference (default: this interpreter)")
    args = p.parse_args(argv)
    if args.ref_python != sys.executable and not args.reference:
        p.error("--ref_python needs --reference DIR")
    t_start = time.perf_counter()
    size = SIZES[args.size]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu_check_{args.size}.json")

    devices = jax.devices()
    d0 = devices[0]
    record: dict[str, Any] = {
        "size": args.size,
        "note": "timing check at the paper's sizes on synthetic data with a freshly initialised "
                "model; not the paper's accuracy numbers",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "device_kind": d0.device_kind, "device_count": len(devices),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
                    "jaxunlearn": os.path.dirname(jaxunlearn.__file__)},
        "sizes": size, "paper_label": PAPER_LABEL, "paper_s": PAPER_S,
        "setup": {}, "stages": {}, "sums": {}, "peak_device_bytes": None, "failed": [],
    }
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    print(f"gpu_check --size {args.size}: jax {jax.__version__}, backend "
          f"{jax.default_backend()}, {len(devices)} x {d0.device_kind}"
          f"{'' if visible is None else f' (CUDA_VISIBLE_DEVICES={visible})'}; jaxunlearn from "
          f"{record['machine']['jaxunlearn']}")
    if args.size == "paper" and jax.default_backend() == "cpu":
        print("warning: the paper's sizes on a CPU take hours (--size tiny is the CPU check)")
    print(f"data: synthetic, 10 x {size['train_per_class']:,} training images "
          f"{'x'.join(map(str, size['image']))}, unseen pool = 70% of 10 x "
          f"{size['test_per_class']:,} test images; ipc {size['ipc']}; class {FORGET_CLASS} "
          "forgotten")
    print(f"model: freshly initialised {model_label(size)}; timings only "
          "(unlearning time does not depend on the weights; accuracies are not measured)",
          flush=True)

    ctx: dict[str, Any] = {"setup": record["setup"]}
    done: set[str] = set()
    for stage, what, rows, needs in STAGES:
        elapsed = time.perf_counter() - t_start
        missing = [n for n in needs if n not in done]
        if missing:
            status = f"skipped (needs {', '.join(missing)})"
            print(f"[{elapsed:7.1f} s] {what}: {status}", flush=True)
            record["failed"].append(stage)
            record["stages"].update({r: {"ok": False, "status": status} for r in rows})
            continue
        print(f"[{elapsed:7.1f} s] {what} ...", flush=True)
        try:
            out = RUNNERS[stage](ctx, size)
        except Exception as e:  # one stage's crash must not waste the others' GPU minutes
            msg = (str(e).strip().splitlines() or [""])[0][:300]
            status = f"FAILED ({type(e).__name__})"
            print(f"[{time.perf_counter() - t_start:7.1f} s] {what}: {status}: {msg}", flush=True)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            record["failed"].append(stage)
            record["stages"].update({r: {"ok": False, "status": status, "error": msg}
                                     for r in rows})
        else:
            done.add(stage)
            mem = device_memory()
            for row, fields in out.items():
                record["stages"][row] = {"ok": True, **fields, "device_memory": mem,
                                         "paper_s": PAPER_S.get(row)}
            summary = "; ".join(f"{ROW_LABELS[r]} {f['run_s']:.2f} s (+{f['compile_s']:.2f} s "
                                "compile)" for r, f in out.items())
            print(f"[{time.perf_counter() - t_start:7.1f} s] {summary}; peak device memory "
                  f"{_mib(mem and mem.get('peak_bytes_in_use'), ' MiB')}", flush=True)
        mem = device_memory()
        record["peak_device_bytes"] = mem and mem.get("peak_bytes_in_use")
        record["sums"] = _sums(record["stages"])
        record["wall_s"] = time.perf_counter() - t_start
        _write(path, record)

    if args.reference:
        elapsed = time.perf_counter() - t_start
        print(f"[{elapsed:7.1f} s] reference A-CF epochs (torch, child process) ...", flush=True)
        record["reference"] = run_reference(args.reference, args.ref_python, args.size, args.out,
                                            record)
        record["wall_s"] = time.perf_counter() - t_start
        _write(path, record)
    _print_table(record)
    if args.reference:
        _print_reference(record)
    print(f"wall clock {record['wall_s']:.1f} s; wrote {path}")
    if args.reference and not record["reference"]["ok"]:
        print("the reference did NOT run: no ours / reference ratios "
              "(the exit status is our stages')", flush=True)
    if record["failed"]:
        print(f"FAILED or skipped stages: {', '.join(record['failed'])}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
