"""Where one A-CF step's time goes: timed sub-programs of the step, each beside its roofline.

The A-CF step of the paper's CPU-scale benchmark (ConvNet-3 of width 128 on 32×32×3 images,
instance norm, average pooling; batch 64 retain + 256 forget images forward and backward,
112 unseen images forward only; Adam) is cut into the parts below, each compiled on its own
(ahead of time, ``block_until_ready``) and timed in interleaved rounds (median):

- per conv layer (32×32 3→128, 16×16 128→128, 8×8 128→128): the forward of the trained images,
  their input gradient (layers 2 and 3: the first layer's input is data), their weight gradient,
  and the forward of the unseen images. A backward pass is timed as (forward + backward) −
  forward, the way ``../shared/bench/conv_passes_torch.py`` times torch's (the forward +
  backward programs return the forward's value too, so XLA cannot drop the forward from them);
- per layer: the instance norm's forward and backward, ReLU + 2×2 average pooling forward and
  backward (trained images), and both forwards of the unseen images;
- the head (flatten, linear 2048→10, cross-entropy) forward + backward;
- A-AMU's extras: drawing the forget and unseen samples (gathers), the ECDF/probit/MMD²
  regulariser with its gradient, and the Adam update of the parameters;
- the whole: the floor (the network's forwards and backwards alone, retain and forget
  concatenated and as separate calls) and the A-CF step itself.

Rooflines, measured in the same process: a conv pass's is its equivalent GEMM's FLOPs
(``2·N·H·W·k²·C_in·C_out``) at the speed of an XLA matmul of 2048³ (the best GEMM rate this
machine reaches); an elementwise part's is its bytes (inputs read + outputs written, float32) at
the bandwidth of a large on-device copy-with-scale. "share" is roofline time / measured time.

The torch side of the same table: ``bench/step_breakdown_torch.py``, run from a virtualenv with
torch (never a dependency of this project), back to back with this one.

Usage::

    python bench/step_breakdown.py                    # about 3 minutes on 2 cores
    python bench/step_breakdown.py --rounds 3 --json bench/results/step_breakdown.json
"""

from __future__ import annotations

if __name__ == "__main__":
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory()  # before JAX starts; CIFAR-shaped work, so the single arena too

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxunlearn.conv import conv2d
from jaxunlearn.losses import aamu_regulariser, cross_entropy
from jaxunlearn.models import InstanceNorm, build_model, init_params
from jaxunlearn.optim import adam
from jaxunlearn.pools import gather_batch
from jaxunlearn.unlearn import make_method, make_unlearn_data
from jaxunlearn.unlearn.aamu import sample_forget_unseen

# (name, input side, input channels): ConvNet-3 of width 128 at 32×32
LAYERS = (("conv1 32x32 3->128", 32, 3), ("conv2 16x16 128->128", 16, 128),
          ("conv3 8x8 128->128", 8, 128))
WIDTH = 128


class Part:
    """One timed sub-program: ``fn(*args)`` compiled ahead, its FLOPs or bytes for the roofline."""

    def __init__(self, name: str, fn: Callable, args: tuple, *, flops: float = 0.0,
                 nbytes: float = 0.0, minus: str | None = None, group: str = ""):
        self.name, self.flops, self.nbytes = name, flops, nbytes
        self.minus, self.group = minus, group
        self.args = args
        self.compiled = jax.jit(fn).lower(*args).compile()
        self.times: list[float] = []

    def run(self, repeats: int) -> float:
        out = self.compiled(*self.args)
        jax.block_until_ready(out)
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = self.compiled(*self.args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / repeats


def _sum_out(f):
    """``f``'s outputs reduced to one scalar each, so that no part of it is dead code."""
    return lambda *a: jax.tree.map(jnp.sum, f(*a))


def _rng(i: int, shape, scale: float = 1.0):
    return scale * jax.random.normal(jax.random.key(i), shape, jnp.float32)


def conv_parts(n: int, n_unseen: int) -> list[Part]:
    parts = []
    for li, (name, hw, cin) in enumerate(LAYERS):
        x = _rng(10 * li, (n, hw, hw, cin))
        xu = _rng(10 * li + 1, (n_unseen, hw, hw, cin))
        w = _rng(10 * li + 2, (3, 3, cin, WIDTH), 0.05)
        g = _rng(10 * li + 3, (n, hw, hw, WIDTH))
        flops = 2.0 * n * hw * hw * 9 * cin * WIDTH
        fwd = f"{name}: forward"
        parts.append(Part(fwd, lambda x, w: jnp.sum(conv2d(x, w)), (x, w), flops=flops,
                          group="conv"))
        if li > 0:
            parts.append(Part(f"{name}: input gradient",
                              _sum_out(jax.value_and_grad(
                                  lambda x, w, g: jnp.vdot(conv2d(x, w), g))),
                              (x, w, g), flops=flops, minus=fwd, group="conv"))
        parts.append(Part(f"{name}: weight gradient",
                          _sum_out(jax.value_and_grad(
                              lambda w, x, g: jnp.vdot(conv2d(x, w), g))),
                          (w, x, g), flops=flops, minus=fwd, group="conv"))
        parts.append(Part(f"{name}: unseen forward", lambda x, w: jnp.sum(conv2d(x, w)), (xu, w),
                          flops=2.0 * n_unseen * hw * hw * 9 * cin * WIDTH, group="conv"))
    return parts


def elementwise_parts(n: int, n_unseen: int) -> list[Part]:
    """Instance norm, ReLU + pooling of each layer's [n, hw, hw, 128] activations."""
    norm = InstanceNorm()
    parts = []
    for li, (name, hw, _) in enumerate(LAYERS):
        layer = name.split()[0].replace("conv", "layer")
        h = _rng(100 + li, (n, hw, hw, WIDTH))
        hu = _rng(110 + li, (n_unseen, hw, hw, WIDTH))
        g = _rng(120 + li, (n, hw // 2, hw // 2, WIDTH))
        gn = _rng(130 + li, (n, hw, hw, WIDTH))
        p = norm.init(jax.random.key(0), h[:1])
        act = 4.0 * n * hw * hw * WIDTH  # bytes of one activation tensor
        act_u = 4.0 * n_unseen * hw * hw * WIDTH

        def in_fwd(p, h):
            return jnp.sum(norm.apply(p, h))

        def in_grad(p, h, gn):
            return jax.value_and_grad(lambda p, h: jnp.vdot(norm.apply(p, h), gn),
                                      argnums=(0, 1))(p, h)

        def rp(h):  # the model's own ops
            return nn.avg_pool(nn.relu(h), (2, 2), strides=(2, 2))

        fwd = f"{layer} instance norm: forward"
        parts.append(Part(fwd, in_fwd, (p, h), nbytes=2 * act, group="norm"))
        # backward: read x, dy (and the saved stats), write dx: ≈ 3 tensors
        parts.append(Part(f"{layer} instance norm: backward", _sum_out(in_grad), (p, h, gn),
                          nbytes=3 * act, minus=fwd, group="norm"))
        fwd = f"{layer} relu + pool: forward"
        parts.append(Part(fwd, lambda h: jnp.sum(rp(h)), (h,), nbytes=1.25 * act, group="pool"))
        parts.append(Part(f"{layer} relu + pool: backward",
                          _sum_out(jax.value_and_grad(lambda h, g: jnp.vdot(rp(h), g))), (h, g),
                          nbytes=2.25 * act, minus=fwd, group="pool"))
        parts.append(Part(f"{layer} norm + relu + pool: unseen forward",
                          lambda p, h: jnp.sum(rp(norm.apply(p, h))), (p, hu),
                          nbytes=3.25 * act_u, group="unseen"))
    return parts


def extra_parts(model, params, data, n: int, b: int) -> list[Part]:
    parts = []
    feats = _rng(200, (n, 4 * 4 * WIDTH))
    y = jnp.arange(n, dtype=jnp.int32) % 10
    head = {"kernel": _rng(201, (4 * 4 * WIDTH, 10), 0.02), "bias": jnp.zeros((10,))}

    def head_grad(head, feats):
        return jax.grad(lambda hd, f: jnp.sum(cross_entropy(f @ hd["kernel"] + hd["bias"], y)),
                        argnums=(0, 1))(head, feats)

    parts.append(Part("head (linear 2048->10 + CE): forward + backward", _sum_out(head_grad),
                      (head, feats), flops=3 * 2.0 * n * 2048 * 10, group="head"))
    m = 4 * b
    parts.append(Part("A-AMU: draw forget + unseen samples (gathers)",
                      lambda k, d: jax.tree.map(jnp.sum, sample_forget_unseen(k, d, m)),
                      (jax.random.key(3), data), nbytes=2 * 2 * 4.0 * m * 32 * 32 * 3,
                      group="a-amu"))
    ce_f, ce_u = jnp.abs(_rng(202, (m,))), jnp.abs(_rng(203, (112,)))
    wf, wu = jnp.ones((m,)), (jnp.arange(112) < 100).astype(jnp.float32)

    def reg(ce_f, ce_u):
        return jax.value_and_grad(lambda a: aamu_regulariser(a, ce_u, wf, wu, k=2.0, kappa=60.0,
                                                              mode="reference"))(ce_f)

    parts.append(Part("A-AMU: ECDF + probit + MMD^2, value and gradient", _sum_out(reg),
                      (ce_f, ce_u), group="a-amu"))
    opt = adam(1e-3)
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)

    def update(grads, state, params):
        upd, state = opt.update(grads, state, params)
        return jax.tree.map(lambda p, u: p + u, params, upd), state

    nparam = sum(x.size for x in jax.tree.leaves(params))
    parts.append(Part("Adam update", _sum_out(update), (grads, state, params),
                      nbytes=4.0 * nparam * 7, group="optimiser"))

    def floor(params, xr, yr, xf, yf, xu, yu, concat):
        def loss(p):
            if concat:
                return jnp.sum(cross_entropy(model.apply(p, jnp.concatenate([xr, xf])),
                                             jnp.concatenate([yr, yf])))
            return (jnp.sum(cross_entropy(model.apply(p, xr), yr))
                    + jnp.sum(cross_entropy(model.apply(p, xf), yf)))

        return jax.tree.map(jnp.sum, jax.grad(loss)(params)), jnp.sum(model.apply(params, xu))

    s = sample_forget_unseen(jax.random.key(0), data, m)
    fargs = (params, data.retain.x[:b], data.retain.y[:b], s.forget_x, s.forget_y,
             s.unseen_x, s.unseen_y)
    for concat in (True, False):
        layout = "concatenated" if concat else "separate calls"
        parts.append(Part(f"floor: forwards + backwards, {layout}",
                          lambda *a, c=concat: floor(*a, c), fargs, group="whole"))
    acf = make_method("a_cf", model.apply, batch_size=b)
    step = acf.phases(0)[-1].step
    st = acf.init(jax.random.key(0), jax.tree.map(jnp.copy, params), data)

    def acf_step(state, data, key):
        state, _ = step(state, gather_batch(data.retain, jnp.arange(b, dtype=jnp.int32)), data,
                        key)
        return jax.tree.map(jnp.sum, state.params)

    parts.append(Part("A-CF step", acf_step, (st, data, jax.random.key(5)), group="whole"))
    return parts


def rooflines(repeats: int) -> tuple[float, float]:
    """(GEMM GFLOPS of an XLA matmul 2048³, bandwidth GB/s of a 256 MiB scale-and-copy)."""
    a, b = _rng(300, (2048, 2048)), _rng(301, (2048, 2048))
    mm = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    big = _rng(302, (64 * 2**20,))
    cp = jax.jit(lambda x: x * 1.0001).lower(big).compile()

    def best(f, *args):
        jax.block_until_ready(f(*args))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            ts.append(time.perf_counter() - t0)
        return min(ts)

    return 2.0 * 2048**3 / best(mm, a, b) / 1e9, 2 * big.nbytes / best(cp, big) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--repeats", type=int, default=2, help="calls per part per round")
    p.add_argument("--json", default=None, help="write the table here too")
    args = p.parse_args(argv)

    from experiments.seeds import synthetic_dataset

    b, n_unseen = 64, 112
    n = b + 4 * b
    ds = synthetic_dataset(500, 100)
    forget = ds.y_train == 0
    data = make_unlearn_data((ds.x_train[~forget], ds.y_train[~forget]),
                             (ds.x_train[forget], ds.y_train[forget]),
                             (ds.x_test, ds.y_test), ds.num_classes)
    model = build_model("convnet", 10, depth=3, width=WIDTH)
    params = init_params(model, jax.random.key(0), (32, 32, 3))

    t0 = time.perf_counter()
    parts = (conv_parts(n, n_unseen) + elementwise_parts(n, n_unseen)
             + extra_parts(model, params, data, n, b))
    print(f"compiled {len(parts)} parts in {time.perf_counter() - t0:.0f} s", flush=True)
    gflops, gbs = rooflines(5)
    for _ in range(args.rounds):
        for part in parts:
            part.times.append(part.run(args.repeats))
    med = {pt.name: statistics.median(pt.times) for pt in parts}

    rows = []
    for pt in parts:
        ms = 1e3 * (med[pt.name] - (med[pt.minus] if pt.minus else 0.0))
        roof = 1e3 * (pt.flops / (gflops * 1e9) + pt.nbytes / (gbs * 1e9))
        rows.append({"part": pt.name, "group": pt.group, "ms": ms,
                     "roofline_ms": roof if roof > 0 else None,
                     "share": roof / ms if roof > 0 and ms > 0 else None,
                     "gflops": pt.flops / ms / 1e6 if pt.flops and ms > 0 else None})
    print(f"jax {jax.__version__}, {jax.devices()[0]}; batch {b} retain + {4 * b} forget "
          f"trained, {n_unseen} unseen forward; GEMM roofline {gflops:.0f} GFLOPS "
          f"(XLA matmul 2048^3), memory {gbs:.1f} GB/s (copy of 256 MiB)")
    print(f"{'part':58s} {'ms':>8s} {'roofline':>9s} {'share':>6s} {'GFLOPS':>7s}")
    for r in rows:
        roof = f"{r['roofline_ms']:9.1f}" if r["roofline_ms"] else f"{'':9s}"
        share = f"{100 * r['share']:5.0f}%" if r["share"] else f"{'':6s}"
        gf = f"{r['gflops']:7.0f}" if r["gflops"] else ""
        print(f"{r['part']:58s} {r['ms']:8.1f} {roof} {share} {gf}")
    parts_sum = sum(r["ms"] for r in rows if r["group"] not in ("whole",))
    print(f"{'sum of the parts':58s} {parts_sum:8.1f}")
    by_group: dict[str, float] = {}
    for r in rows:
        by_group[r["group"]] = by_group.get(r["group"], 0.0) + r["ms"]
    print("by group (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in by_group.items()
                                        if k != "whole"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"jax": jax.__version__, "gemm_gflops": gflops, "memory_gbs": gbs,
                       "rounds": args.rounds, "rows": rows, "sum_ms": parts_sum,
                       "raw_s": {pt.name: pt.times for pt in parts}}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
