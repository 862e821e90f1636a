"""What several processes cost: one training and one A-CF run as 1 process on 1 device, 1 process
on 2 devices, and 2 processes on 1 device each (JAX's multi-controller runtime, gloo over
127.0.0.1), in one run.

The digits study's model (ConvNet-2, width 64) on all ≈1,350 digits training images, batch 64:
``train.fit`` for ``--epochs`` epochs (SGD with momentum), then A-CF (batch 16, one epoch of the
retain set, class 0 forgotten) from the trained model. Compilation is excluded: each side runs
the same fit and A-CF once to warm up (every step is compiled ahead of time and cached), then
the timed ones (``jax.block_until_ready`` on the parameters; A-CF's time is ``run_method``'s
``unlearn_s``). Each side runs in fresh child processes, sides interleaved for ``--repeats``
rounds, so every ratio's sides ran in the same window; medians are reported.

On a 2-core CPU this measures overhead, not a speed-up: 2 devices are 2 cores shared by XLA's
thread pools either way, and 2 processes add gloo's all-reduce over TCP to every step. On
several GPUs or hosts the same code splits each batch over the devices.

Usage::

    python bench/processes.py                  # ~4 min on 2 cores
    python bench/processes.py --epochs 5 --repeats 2

Writes ``bench/results/processes_<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile

SIDES = ("1 process, 1 device", "1 process, 2 devices", "2 processes, 1 device each")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _child(args: argparse.Namespace) -> None:
    from jaxunlearn import sharding

    if args.coordinator:
        sharding.initialize_distributed(args.coordinator, 2, args.process_id)
    import time

    import jax
    import numpy as np
    from sklearn.datasets import load_digits

    from jaxunlearn import optim, pools, train
    from jaxunlearn.models import build_model, init_fn_for
    from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method

    d = load_digits()
    x = (d.images[..., None] / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    x_tr, y_tr, x_u, y_u = x[:1350], y[:1350], x[1350:], y[1350:]
    model = build_model("convnet", 10, depth=2, width=64)
    init = init_fn_for(model, x.shape[1:])
    pool = pools.make_pool(x_tr, y_tr)
    f, r = np.flatnonzero(y_tr == 0), np.flatnonzero(y_tr != 0)
    data = make_unlearn_data((x_tr[r], y_tr[r]), (x_tr[f], y_tr[f]), (x_u, y_u), 10)
    acf = make_method("a_cf", model.apply, batch_size=16)
    steps = args.epochs * -(-len(y_tr) // 64)

    def once():
        t0 = time.perf_counter()
        out = train.fit(model.apply, init(jax.random.key(0)), pool, jax.random.key(1),
                        epochs=args.epochs, batch_size=64, optimizer=optim.sgd(0.05, 0.9))
        jax.block_until_ready(out.params)
        fit_s = time.perf_counter() - t0
        un = run_method(acf, out.params, data, jax.random.key(2))
        return fit_s, un.unlearn_s, out.history[-1]["train/loss"]

    once()  # compiles every step (cached process-wide)
    fit_s, acf_s, loss = once()
    if jax.process_index() == 0:
        with open(args.out, "w") as fh:
            json.dump({"fit_s": fit_s, "fit_steps_per_s": steps / fit_s, "acf_s": acf_s,
                       "loss": loss, "devices": jax.device_count()}, fh)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_side(side: str, epochs: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        base = [sys.executable, __file__, "--child", "--out", out, "--epochs", str(epochs)]
        if side == SIDES[2]:
            port = _free_port()
            procs = [subprocess.Popen([*base, "--coordinator", f"127.0.0.1:{port}",
                                       "--process_id", str(i)], env=env) for i in range(2)]
            codes = [p.wait(timeout=1800) for p in procs]
        else:
            if side == SIDES[1]:
                env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
            codes = [subprocess.run(base, env=env, timeout=1800).returncode]
        if any(codes):
            raise RuntimeError(f"{side}: exit codes {codes}")
        with open(out) as fh:
            return json.load(fh)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", help=argparse.SUPPRESS)
    p.add_argument("--process_id", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    for rep in range(args.repeats):
        for side in SIDES:
            r = _run_side(side, args.epochs)
            runs[side].append(r)
            print(f"round {rep + 1}, {side}: fit {r['fit_steps_per_s']:.1f} steps/s "
                  f"({r['fit_s']:.2f} s), A-CF {r['acf_s']:.2f} s", flush=True)
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in ("fit_steps_per_s",
                                                                     "acf_s")} for s in SIDES}
    base = med[SIDES[0]]
    lines = [f"# Several processes on this machine ({datetime.date.today()}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores)", "",
             f"ConvNet-2 width 64 on 1,350 digits: fit {args.epochs} epochs at batch 64, then "
             f"A-CF (batch 16); medians of {args.repeats} interleaved rounds, compile excluded.",
             "", "| side | fit steps/s | fit vs 1 device | A-CF s | A-CF time vs 1 device |",
             "|---|---|---|---|---|"]
    for s in SIDES:
        m = med[s]
        lines.append(f"| {s} | {m['fit_steps_per_s']:.1f} | "
                     f"{m['fit_steps_per_s'] / base['fit_steps_per_s']:.2f}× | "
                     f"{m['acf_s']:.2f} | {m['acf_s'] / base['acf_s']:.2f}× |")
    losses = {s: [r["loss"] for r in runs[s]] for s in SIDES}
    lines += ["", f"Last-epoch training loss per side (the same global batches): {losses}"]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"processes_{datetime.date.today()}")
    with open(stem + ".json", "w") as fh:
        json.dump({"epochs": args.epochs, "runs": runs, "medians": med}, fh, indent=1)
    with open(stem + ".md", "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
