"""Many models at once: M vmapped models against M models one after another, in one run.

The U-LiRA audit (``experiments/ulira.py``) trains and unlearns tens of models of one
architecture. This measures what the stacked engine (:mod:`jaxunlearn.ensemble`) buys over
running the same models one after another, on the digits study's model (ConvNet-2, width 64,
8×8 images) and data (each model trains on its own random half of the ≈808 training images,
batch 64, SGD with momentum):

- **training throughput** for M = 1, 8, 32 at batch 64 (the digits original's) and 16 (its
  A-AMU runs): model-steps per second of three ways to train M models: *sequential* (one after
  another, every one through *one* compiled step), *vmapped* (one ``run_phases`` over the stack,
  ``Ensemble(M, chunk=M)``) and *in-step loop* (``Ensemble(M, chunk=1)``: ``lax.map`` over the
  models inside one compiled step). Compilation is excluded on every side: each runs one warm-up
  epoch with the same shapes first, then the timed epochs. Every (side, M) runs in its own child
  process, sides interleaved (seq, vmap, loop, seq, ... for ``--repeats``), so the sides of a
  ratio ran in the same window; medians over repeats are reported, with the child's peak
  resident memory (``ru_maxrss``: the JAX runtime included);
- **the convolutions under vmap**: vmapping a convolution over per-model kernels lowers to a
  *grouped* convolution (``feature_group_count = M``). For both conv layers of the model at
  M = 32 (forward + both gradients, as in a training step) it times the vmapped conv, the same
  conv called M times through one compiled single-model program, and the engine's layout
  (:func:`jaxunlearn.conv.stacked_models`: im2col patches @ kernel, batched GEMMs under vmap),
  with GFLOPS.

Usage::

    python bench/ensemble.py               # ~6 min on 2 cores
    python bench/ensemble.py --models 1 8 32 --batch 64 16 --epochs 3 --repeats 2

Writes ``bench/results/ensemble_<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from functools import partial

SIDES = ("seq", "vmap", "loop")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---------------------------------------------------------------------------------------------
# Child: one (side, M) training measurement


def _child_train(side: str, m: int, epochs: int, batch_size: int) -> dict:
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory(single_arena=False)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxunlearn import ensemble, optim, pools, train
    from jaxunlearn.data import load_dataset
    from jaxunlearn.models import build_model, init_fn_for

    ds = load_dataset("digits")
    x, y = ds.x_train, ds.y_train
    model = build_model("convnet", 10, depth=2, width=64)
    init_fn = init_fn_for(model, x.shape[1:])
    pool = pools.make_pool(x, y)
    include = np.zeros((m, pool.y.shape[0]), bool)
    include[:, :len(y)] = ensemble.random_halves(jax.random.key(1), len(y), m)
    keys = jax.random.split(jax.random.key(2), m)
    params = ensemble.init_models(init_fn, jax.random.split(jax.random.key(0), m))
    opt = optim.sgd(0.05, 0.9, 5e-4)
    phase = train.Phase("train", train.ce_step(model.apply, opt))  # one step, built once

    def state_of(p):
        p = jax.tree.map(jnp.copy, p)
        return train.TrainState(p, opt.init(p), (), jnp.int32(0))

    def run(state, key, inc, runner, n_epochs):
        state, _ = train.run_phases(state, {"train": pool}, key, epochs=n_epochs,
                                    phases=lambda e: (phase,), batch_size=batch_size,
                                    runner=runner, include={"train": inc})
        return jax.block_until_ready(state.params)

    if side != "seq":  # "vmap": all M vmapped; "loop": one at a time inside the compiled step;
        # "chunkK": vmapped groups of K, one group after another inside the step
        chunk = {"vmap": m, "loop": 1}.get(side) or int(side.removeprefix("chunk"))
        runner = train.PhaseRunner(ensemble.Ensemble(m, chunk=chunk))
        lift = runner.models.lift

        def stacked_state():
            p = jax.tree.map(jnp.copy, params)
            return train.TrainState(p, lift(opt.init, (0,))(p), (),
                                    lift(lambda q: jnp.int32(0), (0,))(p))

        inc = runner.models.place(jnp.asarray(include))
        run(stacked_state(), keys, inc, runner, 1)  # warm-up: compiles the step and shuffle
        state = stacked_state()
        t0 = time.perf_counter()
        run(state, keys, inc, runner, epochs)
        seconds = time.perf_counter() - t0
    else:
        runner = train.PhaseRunner()
        incs = [jnp.asarray(include[i]) for i in range(m)]
        run(state_of(ensemble.model_at(params, 0)), keys[0], incs[0], runner, 1)  # warm-up
        states = [state_of(ensemble.model_at(params, i)) for i in range(m)]
        t0 = time.perf_counter()
        for i in range(m):
            run(states[i], keys[i], incs[i], runner, epochs)
        seconds = time.perf_counter() - t0
    steps = epochs * -(-int(include[0].sum()) // batch_size)
    return {"side": side, "models": m, "batch": batch_size, "epochs": epochs,
            "steps_per_model": steps,
            "seconds": seconds, "model_steps_per_s": m * steps / seconds,
            "compile_s": runner.compile_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------
# Child: the conv layers under vmap


def _child_conv(m: int, batch: int, repeats: int) -> list[dict]:
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory(single_arena=False)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxunlearn.conv import conv2d, stacked_models

    rng = np.random.default_rng(0)
    rows = []
    # (layer, H, C_in, C_out): the digits ConvNet-2 at width 64, 3×3 "SAME" convolutions
    for layer, hw, cin, cout in (("conv0 8x8 1->64", 8, 1, 64), ("conv1 4x4 64->64", 4, 64, 64)):
        x = jnp.asarray(rng.normal(size=(m, batch, hw, hw, cin)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(m, 3, 3, cin, cout)), jnp.float32) * 0.1
        g = jnp.asarray(rng.normal(size=(m, batch, hw, hw, cout)), jnp.float32)

        def pass_lax(x1, w1, g1):  # forward + input and weight gradients of one model
            out, vjp = jax.vjp(lambda a, b: conv2d(a, b, padding="SAME"), x1, w1)
            dx, dw = vjp(g1)
            return out, dx, dw

        def under(layout, fn=pass_lax):
            def vmapped(*a):
                with stacked_models(layout):
                    return jax.vmap(fn)(*a)
            return jax.jit(vmapped)

        single = jax.jit(pass_lax)
        flops = 3 * 2 * m * batch * hw * hw * 9 * cin * cout  # 3 passes, 2·M·K·N each
        fns = {
            "vmapped conv (grouped)": partial(under("lax"), x, w, g),
            "one model at a time": lambda x=x, w=w, g=g, single=single: [
                single(x[i], w[i], g[i]) for i in range(m)],
            "vmapped im2col (the engine's layout)": partial(under("im2col"), x, w, g),
        }
        for f in fns.values():
            jax.block_until_ready(f())
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):  # interleaved
            for k, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f())
                times[k].append(time.perf_counter() - t0)
        for k, ts in times.items():
            med = float(np.median(ts))
            rows.append({"layer": layer, "models": m, "batch": batch, "layout": k,
                         "seconds": med, "gflops": flops / med / 1e9})
    return rows


# ---------------------------------------------------------------------------------------------
# Parent


def _spawn(args: list[str]) -> object:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per model")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--conv-repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 16],
                    help="batch sizes per model (64: the digits original; 16: its A-AMU runs)")
    ap.add_argument("--child-train", nargs=4, metavar=("SIDE", "M", "EPOCHS", "BATCH"))
    ap.add_argument("--child-conv", nargs=3, type=int, metavar=("M", "BATCH", "REPEATS"))
    args = ap.parse_args()
    if args.child_train:
        side, m, epochs, batch = args.child_train
        print(json.dumps(_child_train(side, int(m), int(epochs), int(batch))))
        return
    if args.child_conv:
        print(json.dumps(_child_conv(*args.child_conv)))
        return

    runs: list[dict] = []
    for rep in range(args.repeats):
        for b in args.batch:
            for m in args.models:
                for side in SIDES:
                    r = _spawn(["--child-train", side, str(m), str(args.epochs), str(b)])
                    r["repeat"] = rep
                    runs.append(r)
                    print(f"  [{rep}] batch {b} M={m:3d} {side:4s}: {r['seconds']:.2f} s, "
                          f"{r['model_steps_per_s']:.1f} model-steps/s, peak "
                          f"{r['peak_rss_mib']:.0f} MiB", flush=True)
    conv_rows = _spawn(["--child-conv", str(max(args.models)), "64", str(args.conv_repeats)])

    import numpy as np

    lines = [f"# Many models at once ({datetime.date.today()}, {platform.node()}, "
             f"{os.cpu_count()} CPUs)", "",
             f"ConvNet-2 width 64 on digits, each model on its own random half, "
             f"{args.epochs} timed epochs per model, compile excluded on both sides; median of "
             f"{args.repeats} repeats, sides interleaved; the ratio is per repeat (same window).",
             "", "model-steps/s of: *sequential* (one model after another, one compiled step, "
             "a Python loop), *vmapped* (`Ensemble(M, chunk=M)`), *in-step loop* "
             "(`Ensemble(M, chunk=1)`: `lax.map` over the models inside one compiled step); "
             "ratios against sequential, per repeat.", "",
             "| batch | M | sequential | vmapped | in-step loop | vmapped / seq | loop / seq | "
             "models/hour (40 epochs, best engine) | peak RSS seq / vmap / loop (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    table = []
    for b in args.batch:
        for m in args.models:
            sel = [r for r in runs if r["models"] == m and r["batch"] == b]

            def med(side, field, sel=sel):
                return float(np.median([r[field] for r in sel if r["side"] == side]))

            def ratios(side, sel=sel):
                return [v["model_steps_per_s"] / s["model_steps_per_s"] for s in sel for v in sel
                        if s["side"] == "seq" and v["side"] == side
                        and s["repeat"] == v["repeat"]]

            rate = {side: med(side, "model_steps_per_s") for side in SIDES}
            rv, rl = ratios("vmap"), ratios("loop")
            steps_per_epoch = sel[0]["steps_per_model"] / args.epochs
            models_hour = max(rate["vmap"], rate["loop"]) / (40 * steps_per_epoch) * 3600
            row = {"batch": b, "models": m, **rate, "vmap_ratio": float(np.median(rv)),
                   "loop_ratio": float(np.median(rl)), "vmap_ratios": rv, "loop_ratios": rl,
                   "models_per_hour": models_hour,
                   **{f"peak_{side}_mib": med(side, "peak_rss_mib") for side in SIDES}}
            table.append(row)
            lines.append(
                f"| {b} | {m} | {rate['seq']:.0f} | {rate['vmap']:.0f} | {rate['loop']:.0f} | "
                f"**{row['vmap_ratio']:.2f}×** ({', '.join(f'{r:.2f}' for r in rv)}) | "
                f"**{row['loop_ratio']:.2f}×** ({', '.join(f'{r:.2f}' for r in rl)}) | "
                f"{models_hour:.0f} | " + " / ".join(f"{row[f'peak_{side}_mib']:.0f}"
                                                   for side in SIDES) + " |")
    lines += ["", f"Convolutions under vmap (M = {max(args.models)}, batch 64 per model; forward "
              "+ input and weight gradients; median of interleaved repeats):", "",
              "| layer | layout | ms | GFLOPS |", "|---|---|---|---|"]
    for r in conv_rows:
        lines.append(f"| {r['layer']} | {r['layout']} | {r['seconds'] * 1e3:.2f} | "
                     f"{r['gflops']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"ensemble_{datetime.date.today()}")
    with open(stem + ".json", "w") as f:
        json.dump({"runs": runs, "table": table, "conv": conv_rows, "args": vars(args)}, f,
                  indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
