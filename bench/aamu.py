"""Benchmark of one A-CF step against one CF step and against its floor (method.md §4, §6 "Time").

Data: CIFAR-shaped synthetic images (``experiments.seeds.synthetic_dataset``: 10 classes × 500
training images 32×32×3, 100 held-out images per class as the unseen pool U), class 0 forgotten:
4,500 retain images, 500 forget images, U of 1,000. Model: ConvNet-3 (width 128), batch 64.

Measured, compile time apart (ahead-of-time ``lower().compile()``, ``block_until_ready``):

- one CF step (SGD, 64 retain images forward + backward) and one A-CF step (Adam, 64 retain
  images + 4b = 256 forget images forward + backward, the unseen sample forward, the on-device
  sampling, the ECDF-probit transform and MMD²). The unseen pool holds only the forgotten
  classes (``make_unlearn_data``), so the unseen sample has min(4b, pool capacity) slots: here
  112 (100 images of class 0, padded to the pool's bucket). Throughput counts every image that
  goes through the network (CF: 64 per step; A-CF: 64 + 256 + 112 = 432);
- the floor of an A-CF step: forward + backward of the same retain and forget images plus the
  forward of the same unseen images, nothing else (no sampling, no loss transform, no optimiser).
  Two layouts are timed, separate calls per group (as the step does) and retain + forget
  concatenated into one call; the floor is the faster. Target: A-CF step ≤ 1.2× floor;
- one A-CF epoch on the full retain set (71 steps) through ``run_method``, as the study runs it,
  and, with ``--reduced_n N``, one on a retain set of N images (the size of the reduced retain
  set, residual images + Blend images, that the side-by-side run takes from the reference's
  record). Compare these with the reference only in the same window: ``bench/side_by_side.py``
  runs both back to back.

Steps are timed in interleaved rounds (CF, A-CF, floor, CF, ...) of ``--steps`` steps each, and
the medians of the rounds are reported, because the machine's 2 cores are shared and timings move
±20% run to run.

Usage::

    python bench/aamu.py                 # ≈ 5 minutes on 2 cores
    python bench/aamu.py --rounds 3 --no_epoch

Writes ``bench/results/aamu.json`` and prints a table.
"""

from __future__ import annotations

if __name__ == "__main__":
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory()  # before JAX starts; CIFAR-shaped work, so the single arena too

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.seeds import synthetic_dataset
from jaxunlearn.losses import cross_entropy
from jaxunlearn.models import build_model, init_params
from jaxunlearn.pools import gather_batch
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method
from jaxunlearn.unlearn.aamu import sample_forget_unseen


def _data(ds, retain_n: int | None = None):
    """Class 0 forgotten; the retain set is the other classes' images (the first ``retain_n``)."""
    forget = ds.y_train == 0
    keep = np.flatnonzero(~forget)[:retain_n]
    return make_unlearn_data((ds.x_train[keep], ds.y_train[keep]),
                             (ds.x_train[forget], ds.y_train[forget]),
                             (ds.x_test, ds.y_test), ds.num_classes)


def _step_runner(method, params, data):
    """AOT-compiled ``(state, idx, key) -> state`` of the method's retain step, and compile s."""
    step = method.phases(0)[-1].step  # the retain phase (CF and A-CF have only that one)

    def run(state, data, idx, key):
        state, _ = step(state, gather_batch(data.retain, idx), data, key)
        return state

    # the step donates its state: give it its own copy of the parameters
    state = method.init(jax.random.key(0), jax.tree.map(jnp.copy, params), data)
    idx = jnp.arange(method.batch_size, dtype=jnp.int32)
    t0 = time.perf_counter()
    jitted = jax.jit(run, donate_argnums=(0,))
    compiled = jitted.lower(state, data, idx, jax.random.key(0)).compile()
    return compiled, state, time.perf_counter() - t0


def _floor_runner(apply_fn, params, data, b: int, m: int, concat: bool):
    """AOT-compiled floor: grads of CE over retain + forget images, forward of unseen images."""
    s = sample_forget_unseen(jax.random.key(0), data, m)
    xr, yr = data.retain.x[:b], data.retain.y[:b]
    args = (params, xr, yr, s.forget_x, s.forget_y, s.unseen_x, s.unseen_y)

    def floor(params, xr, yr, xf, yf, xu, yu):
        def loss(p):
            if concat:
                return jnp.sum(cross_entropy(apply_fn(p, jnp.concatenate([xr, xf])),
                                             jnp.concatenate([yr, yf])))
            return (jnp.sum(cross_entropy(apply_fn(p, xr), yr))
                    + jnp.sum(cross_entropy(apply_fn(p, xf), yf)))

        grads = jax.grad(loss)(params)
        return grads, jnp.sum(apply_fn(params, xu))  # the unseen forward must not be dead code

    t0 = time.perf_counter()
    compiled = jax.jit(floor).lower(*args).compile()
    return compiled, args, time.perf_counter() - t0


def _steps(args, model, params, data, acf) -> dict:
    """CF, A-CF and floor steps in interleaved rounds; the result fields and a printed table."""
    cf = make_method("cf", model.apply, batch_size=64)
    b = acf.batch_size
    m = 4 * b
    mf = min(m, data.forget.y.shape[0])
    mu = min(m, data.unseen.y.shape[0])
    images = {"cf": b, "a_cf": b + mf + mu, "floor_separate": b + mf + mu,
              "floor_concat": b + mf + mu}

    cf_run, cf_state, cf_compile = _step_runner(cf, params, data)
    a_run, a_state, a_compile = _step_runner(acf, params, data)
    floors = {name: _floor_runner(model.apply, params, data, b, m, concat)
              for name, concat in (("floor_separate", False), ("floor_concat", True))}
    compile_s = {"cf": cf_compile, "a_cf": a_compile,
                 **{k: v[2] for k, v in floors.items()}}

    retain_n = int(data.retain.n)
    idx_of = lambda s: (jnp.arange(b, dtype=jnp.int32) + s * b) % retain_n  # noqa: E731

    states = {"cf": cf_state, "a_cf": a_state}
    runs = {"cf": cf_run, "a_cf": a_run}

    def time_steps(name):
        """Seconds per step of ``args.steps`` steps of method ``name``, continuing its state."""
        state, run = states[name], runs[name]
        t0 = time.perf_counter()
        for s in range(args.steps):
            state = run(state, data, idx_of(s), jax.random.key(s))
        states[name] = jax.block_until_ready(state)
        return (time.perf_counter() - t0) / args.steps

    def time_floor(name):
        fn, fargs = floors[name][0], floors[name][1]
        t0 = time.perf_counter()
        out = None
        for _ in range(args.steps):
            out = fn(*fargs)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / args.steps

    timers = {"cf": lambda: time_steps("cf"), "a_cf": lambda: time_steps("a_cf"),
              "floor_separate": lambda: time_floor("floor_separate"),
              "floor_concat": lambda: time_floor("floor_concat")}
    for t in timers.values():  # warm-up round (first-call allocations)
        t()
    rounds: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(args.rounds):
        for k, t in timers.items():
            rounds[k].append(t())
    step_s = {k: float(np.median(v)) for k, v in rounds.items()}
    floor_name = min(("floor_separate", "floor_concat"), key=step_s.get)
    ips = {k: images[k] / step_s[k] for k in step_s}

    result = {
        "setup": {"model": "convnet-3 width 128", "image": [32, 32, 3], "batch": b,
                  "forget_samples": mf, "unseen_samples": mu,
                  "unseen_real_per_step": int(np.sum(np.asarray(data.unseen.y)[
                      :int(data.unseen.n)] == 0).clip(max=m)),
                  "retain": retain_n, "forget": int(data.forget.n), "unseen": int(data.unseen.n),
                  "steps_per_round": args.steps, "rounds": args.rounds},
        "images_per_step": images,
        "step_s_median": step_s,
        "step_s_rounds": rounds,
        "images_per_s": ips,
        "compile_s": compile_s,
        "a_cf_step_over_cf_step": step_s["a_cf"] / step_s["cf"],
        "a_cf_throughput_over_cf_throughput": ips["a_cf"] / ips["cf"],
        "floor": floor_name,
        "a_cf_step_over_floor": step_s["a_cf"] / step_s[floor_name],
        "target_a_cf_step_over_floor": 1.2,
    }

    print(f"{'':16s} {'step ms':>9s} {'images/step':>12s} {'images/s':>9s} {'compile s':>10s}")
    for k in timers:
        print(f"{k:16s} {1e3 * step_s[k]:9.1f} {images[k]:12d} {ips[k]:9.0f} {compile_s[k]:10.1f}")
    print(f"A-CF step / CF step: {result['a_cf_step_over_cf_step']:.2f}x; throughput A-CF / CF: "
          f"{result['a_cf_throughput_over_cf_throughput']:.2f}x; A-CF step / floor "
          f"({floor_name}): {result['a_cf_step_over_floor']:.2f}x (target <= 1.2)")

    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="training images per class")
    p.add_argument("--unseen", type=int, default=100, help="unseen-pool images per class")
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--no_epoch", action="store_true", help="skip the A-CF epochs")
    p.add_argument("--epochs_only", action="store_true", help="only the A-CF epochs")
    p.add_argument("--reduced_n", type=int, default=None,
                   help="also time an A-CF epoch on a retain set of this many images")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "aamu.json"))
    args = p.parse_args(argv)

    ds = synthetic_dataset(args.n, args.unseen)
    data = _data(ds)
    model = build_model("convnet", 10, depth=3, width=128)
    params = init_params(model, jax.random.key(0), (32, 32, 3))
    acf = make_method("a_cf", model.apply, batch_size=64)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "jax": jax.__version__, "device": str(jax.devices()[0])}}
    if not args.epochs_only:
        result.update(_steps(args, model, params, data, acf))
    if not args.no_epoch:
        sets = {"a_cf_epoch": data}
        if args.reduced_n:
            sets["a_cf_epoch_reduced"] = _data(ds, args.reduced_n)
        b = acf.batch_size
        for name, d in sets.items():
            out = run_method(acf, params, d, jax.random.key(1))
            n_ret = int(d.retain.n)
            steps = -(-n_ret // b)
            result[name] = {"unlearn_s": out.unlearn_s, "compile_s": out.compile_s,
                            "retain": n_ret, "steps": steps, "step_s": out.unlearn_s / steps}
            print(f"A-CF epoch ({n_ret} retain images, {steps} steps): {out.unlearn_s:.1f} s "
                  f"(+{out.compile_s:.1f} s compile)", flush=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
