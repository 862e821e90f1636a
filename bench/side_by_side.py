"""jaxunlearn beside the reference PyTorch code, back to back in one window, ratios printed.

A speed claim against the reference holds only for runs made in the same window on the same
machine (on this shared VM the same reference run took 60 s one day and 140 s another). This
script runs, ``--rounds`` times (default 2), one after the other:

1. the reference's stages with a timing harness that imports the reference code
   (algebraicdianuj/DC_Unlearning) unchanged: features, k-means, Blend, one A-CF epoch on the
   reduced and on the full retain set, twice: as is, and with the glibc allocator settings that
   ``jaxunlearn.hostmem`` applies to our process, given to it as an environment variable
   (:data:`FAIR_GLIBC`; without them its steps pay page faults ours do not). Our ratio is taken
   to the faster of the two. The harness and the reference live outside this repository, with
   torch in their own virtualenv (``--ref_python``); torch is never a dependency of jaxunlearn;
2. ``bench/condense.py`` (features, k-means, split, Blend: the median of its Blend runs);
3. ``bench/aamu.py --epochs_only --reduced_n R`` (one A-CF epoch on the full retain set and one
   on R images, R being the reference's reduced retain set of the same round).

Both sides use CIFAR-shaped synthetic data of the same size (``--n`` per class, ``--ipc``), the
ConvNet-3 of width 128, batch 64 for A-CF and 2 CPU threads. The reference's user and system
seconds are printed beside its wall clock: much of its time is page faults on this VM.

Usage::

    python bench/side_by_side.py --ref_python $SCRATCH/venv/bin/python \\
        --ref_timing $SCRATCH/ref_timing.py --ref_dir $SCRATCH/DC_Unlearning
    python bench/side_by_side.py ... --n 5000 --ipc 1000 --stages 1,2,3 --rounds 1 \
        --blend-runs 1 --repeats 1                                             # paper scale

Writes ``bench/results/side_by_side_<n>_<ipc>_<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# what jaxunlearn.hostmem.retain_freed_memory(single_arena=True) does with mallopt, for a process
# that cannot call it (the reference): one arena, no mmap for large blocks, no trimming
FAIR_GLIBC = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
              "glibc.malloc.trim_threshold=68719476736")
REF_MODES = (("as_is", None), ("allocator", FAIR_GLIBC))


def _run(cmd: list[str], env: dict | None = None) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def reference_round(args, name: str, out: str, glibc: str | None = None) -> dict:
    """One run of the reference's stages (``glibc``: its ``GLIBC_TUNABLES``, or as is)."""
    cmd = [args.ref_python, args.ref_timing, "--ref_dir", args.ref_dir, "--out", out,
           "--run_name", name, "--n_per_class", str(args.n), "--ipc", str(args.ipc),
           "--stages", args.stages, "--threads", "2"]
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if glibc:
        env["GLIBC_TUNABLES"] = glibc
    _run(cmd, env)
    with open(out) as f:
        return json.load(f)[name]


def ours_round(args, tag: str, reduced_n: int | None, tmp: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    cond = os.path.join(tmp, f"condense_{tag}.json")
    _run([sys.executable, os.path.join(HERE, "condense.py"), "--n", str(args.n), "--ipc",
          str(args.ipc), "--out", cond, "--blend-runs", str(args.blend_runs), "--repeats",
          str(args.repeats)], env)
    with open(cond) as f:
        res = {"condense": json.load(f)}
    if "4" in args.stages.split(","):
        aamu = os.path.join(tmp, f"aamu_{tag}.json")
        cmd = [sys.executable, os.path.join(HERE, "aamu.py"), "--n", str(args.n), "--epochs_only",
               "--out", aamu]
        if reduced_n:
            cmd += ["--reduced_n", str(reduced_n)]
        _run(cmd, env)
        with open(aamu) as f:
            res["aamu"] = json.load(f)
    return res


def best_reference(refs: dict[str, dict]) -> dict:
    """Per stage, the faster of the reference's runs (as is / with the allocator settings): a
    merged record whose ``seconds`` and ``rusage`` are those of the faster run, and whose
    ``mode`` says which it was."""
    modes = list(refs)
    out = {"seconds": {}, "info": {"rusage": {}}, "mode": {}}
    for stage in refs[modes[0]]["seconds"]:
        mode = min((m for m in modes if stage in refs[m]["seconds"]),
                   key=lambda m: refs[m]["seconds"][stage])
        out["seconds"][stage] = refs[mode]["seconds"][stage]
        out["mode"][stage] = mode
        ru = refs[mode]["info"].get("rusage", {}).get(stage)
        if ru is not None:
            out["info"]["rusage"][stage] = ru
    return out


def rows(ref: dict, ours: dict) -> list[tuple[str, float, float, dict | None]]:
    """(stage, reference s, ours s, reference rusage) for every stage both sides ran."""
    sec, ru = ref["seconds"], ref["info"].get("rusage", {})
    c = ours["condense"]
    out = [("features", sec.get("1a_feature_extraction"), c["embed"]["run_s"],
            ru.get("1_features_kmeans")),
           ("k-means", sec.get("1b_kmeans_all_classes"), c["kmeans"]["run_s"], None),
           ("features + k-means", sec.get("1_features_kmeans"),
            c["embed"]["run_s"] + c["kmeans"]["run_s"], ru.get("1_features_kmeans")),
           ("Blend (our median of runs)", sec.get("3_blend"), c["blend"]["run_s"],
            ru.get("3_blend")),
           ("Blend (our first run)", sec.get("3_blend"), c["blend"]["runs"][0]["run_s"],
            ru.get("3_blend"))]
    if "aamu" in ours:
        a = ours["aamu"]
        out.append(("A-CF epoch, full retain set", sec.get("4_acf_epoch_full"),
                    a["a_cf_epoch"]["unlearn_s"], ru.get("4_acf_epoch_full")))
        if "a_cf_epoch_reduced" in a:
            out.append(("A-CF epoch, reduced retain set", sec.get("4_acf_epoch_reduced"),
                        a["a_cf_epoch_reduced"]["unlearn_s"], ru.get("4_acf_epoch_reduced")))
    return [r for r in out if r[1] is not None]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref_python", required=True, help="python of the venv that has torch")
    p.add_argument("--ref_timing", required=True, help="the reference's timing harness")
    p.add_argument("--ref_dir", required=True, help="the reference code's work tree")
    p.add_argument("--n", type=int, default=500, help="training images per class")
    p.add_argument("--ipc", type=int, default=100)
    p.add_argument("--stages", default="1,2,3,4", help="reference stages (4 = A-CF epochs)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--blend-runs", type=int, default=3, help="our Blend runs (median)")
    p.add_argument("--repeats", type=int, default=3, help="bench/condense.py's floor repeats")
    args = p.parse_args(argv)

    date = datetime.datetime.now().isoformat(timespec="seconds")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            name = f"side_by_side_{args.n}_{args.ipc}_{date}_round{r}"
            refs = {mode: reference_round(args, name, os.path.join(tmp, f"ref_{mode}.json"),
                                          glibc) for mode, glibc in REF_MODES}
            best = best_reference(refs)
            reduced = refs["as_is"].get("sizes", {}).get("acf_reduced_retain")
            ours = ours_round(args, f"r{r}", reduced, tmp)
            rounds.append({"reference": refs, "ours": ours, "table": rows(best, ours),
                           "as_is": rows(refs["as_is"], ours)})

    lines = [f"# Side by side, {date}: {args.n} images/class, ipc {args.ipc}, the reference as "
             f"is, the reference with our allocator settings (GLIBC_TUNABLES={FAIR_GLIBC}), then "
             f"jaxunlearn; {args.rounds} round(s). Ours / reference is to the faster reference.",
             "", "| round | stage | reference as is s | reference, allocator settings s | "
             "jaxunlearn s | ours / faster reference |", "|---|---|---|---|---|---|"]
    for r, rd in enumerate(rounds):
        as_is = {stage: ref_s for stage, ref_s, _, _ in rd["as_is"]}
        for stage, ref_s, our_s, _ in rd["table"]:
            alloc = [s for st, s, _, _ in rows(rd["reference"]["allocator"], rd["ours"])
                     if st == stage]
            alloc_s = f"{alloc[0]:.2f}" if alloc else "–"
            lines.append(f"| {r} | {stage} | {as_is.get(stage, float('nan')):.2f} | {alloc_s} | "
                         f"{our_s:.2f} | {our_s / ref_s:.2f}× |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    stem = os.path.join(HERE, "results", f"side_by_side_{args.n}_{args.ipc}_{date[:10]}")
    with open(stem + ".json", "w") as f:
        json.dump({"date": date, "args": vars(args), "rounds": rounds}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
