"""Convolution passes against their GEMM roofline, lax's VJP beside jaxunlearn.conv, in one run.

For every conv shape of ConvNet-3 (32×32, width 128), the digits ConvNet-2 (8×8, width 128) and
ResNet-18 (32×32, width 64), it times, compiled ahead and with ``block_until_ready``:

- the forward pass (``lax.conv_general_dilated``, the same in both),
- the input gradient with lax's VJP and with :func:`jaxunlearn.conv.conv2d` (``"gemm"``),
- the weight gradient with lax's VJP and with ``"gemm"`` (one im2col GEMM),
- the roofline: the GEMM the convolution is equivalent to, ``[M, K] @ [K, N]`` with
  M = batch·H_out·W_out, K = C_in·k², N = C_out, on random matrices.

Every pass does 2·M·K·N flops; GFLOPS and the fraction of the roofline are printed per pass, with
what ``"auto"`` picks for the shape. The stem's input gradient is never computed in training (its
input is data), so it is shown but not a target. Repeats are interleaved (A, B, A, B, ...) and the
median is reported, since the machine's 2 cores are shared.

Then (unless ``--no-step``) it times the ConvNet-3 train step (forward, backward, SGD-momentum
update; 320 images of 32×32) with ``backward("lax")`` and ``backward("auto")`` interleaved in this
process, and (unless ``--no-allocator``) runs that step in child processes with
``JAXUNLEARN_RETAIN_MEMORY=0`` and ``=1`` alternately (the allocator setting is process-wide), so
that "today's" configuration (lax's VJP, glibc's default allocator) stands beside the shipped one
(``auto``, memory retained).

Usage::

    python bench/conv.py                 # every shape, train-step A/B, allocator A/B (~6 min)
    python bench/conv.py --only convnet3 --no-allocator

Writes ``bench/results/conv_<date>.json`` and ``.md``.
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

if __name__ == "__main__" and "--child-step" not in sys.argv:
    from jaxunlearn.hostmem import retain_freed_memory

    retain_freed_memory()  # before JAX starts; CIFAR-shaped work, so the single arena too

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import conv
from jaxunlearn.models import build_model

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# (model, layer, batch, H_in, C_in, C_out, k, stride)
SHAPES = [
    ("convnet3", "conv1 (stem)", 320, 32, 3, 128, 3, 1),
    ("convnet3", "conv2", 320, 16, 128, 128, 3, 1),
    ("convnet3", "conv3", 320, 8, 128, 128, 3, 1),
    ("digits", "conv1 (stem)", 256, 8, 1, 128, 3, 1),
    ("digits", "conv2", 256, 4, 128, 128, 3, 1),
    ("resnet18", "stem", 64, 32, 3, 64, 3, 1),
    ("resnet18", "layer1 3x3", 64, 32, 64, 64, 3, 1),
    ("resnet18", "layer2 3x3/2", 64, 32, 64, 128, 3, 2),
    ("resnet18", "layer2 3x3", 64, 16, 128, 128, 3, 1),
    ("resnet18", "layer2 1x1/2", 64, 32, 64, 128, 1, 2),
    ("resnet18", "layer3 3x3/2", 64, 16, 128, 256, 3, 2),
    ("resnet18", "layer3 3x3", 64, 8, 256, 256, 3, 1),
    ("resnet18", "layer3 1x1/2", 64, 16, 128, 256, 1, 2),
    ("resnet18", "layer4 3x3/2", 64, 8, 256, 512, 3, 2),
    ("resnet18", "layer4 3x3", 64, 4, 512, 512, 3, 1),
    ("resnet18", "layer4 1x1/2", 64, 8, 256, 512, 1, 2),
]


def interleaved(fns: dict, repeats: int, usage: dict | None = None) -> dict:
    """Median seconds of each thunk, run A, B, C, A, B, C, ... after two warm-up calls each.

    ``usage``, if given, receives the page faults and system seconds per call of the timed calls
    (the warm-up calls, which grow the heap, are left out).
    """
    for f in fns.values():
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    times = {k: [] for k in fns}
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if usage is not None:
        calls = repeats * len(fns)
        usage["page_faults_per_call"] = (r1.ru_minflt - r0.ru_minflt) / calls
        usage["sys_s_per_call"] = (r1.ru_stime - r0.ru_stime) / calls
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_shape(batch, h, c_in, c_out, k, stride, repeats):
    pad = ((k // 2, k // 2),) * 2
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(keys[0], (batch, h, h, c_in))
    w = jax.random.normal(keys[1], (k, k, c_in, c_out)) / np.sqrt(k * k * c_in)
    ho = (h + 2 * (k // 2) - k) // stride + 1
    g = jax.random.normal(keys[2], (batch, ho, ho, c_out))
    m, kk = batch * ho * ho, c_in * k * k
    a = jax.random.normal(keys[3], (m, kk))
    b = jax.random.normal(keys[4], (kk, c_out))

    def f(mode):
        return lambda x, w: conv.conv2d(x, w, (stride, stride), pad, backward_mode=mode)

    def compiled(fn, *args):
        exe = jax.jit(fn).lower(*args).compile()
        return lambda: exe(*args)

    fns = {
        "gemm_roofline": compiled(lambda a, b: a @ b, a, b),
        "forward": compiled(f("lax"), x, w),
        "dx_lax": compiled(lambda x, w, g: jax.vjp(lambda x: f("lax")(x, w), x)[1](g)[0], x, w, g),
        "dx_gemm": compiled(lambda x, w, g: jax.vjp(lambda x: f("gemm")(x, w), x)[1](g)[0],
                            x, w, g),
        "dw_lax": compiled(lambda x, w, g: jax.vjp(lambda w: f("lax")(x, w), w)[1](g)[0], x, w, g),
        "dw_gemm": compiled(lambda x, w, g: jax.vjp(lambda w: f("gemm")(x, w), w)[1](g)[0],
                            x, w, g),
    }
    usage: dict = {}
    t = interleaved(fns, repeats, usage)
    flops = 2.0 * m * kk * c_out
    return {"time_s": t, "gflops": {n: flops / s / 1e9 for n, s in t.items()},
            "gflop": flops / 1e9, "out_hw": ho,
            "auto": conv.resolve_backward((ho, ho), (k, k), c_in, c_out),
            "page_faults_per_call": usage["page_faults_per_call"]}


def train_step_images_per_s(repeats: int) -> dict:
    """ConvNet-3 SGD-momentum step on 320 images, lax's VJP vs auto, interleaved."""
    model = build_model("convnet", num_classes=10, depth=3, width=128)
    x = jax.random.normal(jax.random.PRNGKey(0), (320, 32, 32, 3))
    y = jnp.arange(320) % 10
    params = model.init(jax.random.PRNGKey(1), x[:1])
    opt = optax.sgd(0.01, momentum=0.9)
    state = opt.init(params)

    def make(mode):
        def step(p, s, x, y):
            with conv.backward(mode):
                loss, grads = jax.value_and_grad(
                    lambda p: optax.softmax_cross_entropy_with_integer_labels(
                        model.apply(p, x), y).mean())(p)
            updates, s = opt.update(grads, s, p)
            return optax.apply_updates(p, updates), s, loss

        exe = jax.jit(step).lower(params, state, x, y).compile()
        return lambda: exe(params, state, x, y)

    fns = {"lax": make("lax"), "auto": make("auto")}
    usage: dict = {}
    t = interleaved(fns, repeats, usage)
    return {"step_s": t, "images_per_s": {k: 320 / s for k, s in t.items()},
            "page_faults_per_step": usage["page_faults_per_call"],
            "sys_s_per_step": usage["sys_s_per_call"]}


def allocator_ab(rounds: int, repeats: int) -> dict:
    """The train step in child processes, memory retained (1) or not (0), alternately."""
    out = {"0": [], "1": []}
    for _ in range(rounds):
        for flag in ("0", "1"):
            env = dict(os.environ, JAXUNLEARN_RETAIN_MEMORY=flag)
            proc = subprocess.run([sys.executable, __file__, "--child-step", "--repeats",
                                   str(repeats)], env=env, capture_output=True, text=True,
                                  check=True)
            out[flag].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="convnet3, digits or resnet18")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--no-allocator", action="store_true")
    ap.add_argument("--child-step", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_step:
        from jaxunlearn.hostmem import retain_freed_memory

        retained = retain_freed_memory()
        res = train_step_images_per_s(args.repeats)
        res["retained"] = retained
        print(json.dumps(res))
        return

    result = {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "shapes": []}
    lines = ["| model | layer | batch | out | C_in→C_out | k/s | roofline GF | fwd | dx lax | "
             "dx gemm | dw lax | dw gemm | dw gemm % | dx % | auto |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print(lines[0], flush=True)
    for model, layer, batch, h, c_in, c_out, k, stride in SHAPES:
        if args.only and model != args.only:
            continue
        r = bench_shape(batch, h, c_in, c_out, k, stride, args.repeats)
        gf = r["gflops"]
        roof = gf["gemm_roofline"]
        auto_dx = gf["dx_gemm"] if r["auto"] == "gemm" else gf["dx_lax"]
        auto_dw = gf["dw_gemm"] if r["auto"] == "gemm" else gf["dw_lax"]
        r.update(model=model, layer=layer, batch=batch, h=h, c_in=c_in, c_out=c_out, k=k,
                 stride=stride, dw_auto_fraction=auto_dw / roof, dx_auto_fraction=auto_dx / roof)
        result["shapes"].append(r)
        line = (f"| {model} | {layer} | {batch} | {r['out_hw']}² | {c_in}→{c_out} | {k}/{stride} "
                f"| {roof:.0f} | {gf['forward']:.0f} | {gf['dx_lax']:.0f} | {gf['dx_gemm']:.0f} "
                f"| {gf['dw_lax']:.0f} | {gf['dw_gemm']:.0f} | {gf['dw_gemm'] / roof:.0%} "
                f"| {auto_dx / roof:.0%} | {r['auto']} |")
        lines.append(line)
        print(line, flush=True)
    lines.append("")
    lines.append("GFLOPS per pass (2·M·K·N / median seconds); % = of the same run's roofline GEMM; "
                 "dx % and auto = what `backward('auto')` runs for the shape.")

    if not args.no_step:
        s = train_step_images_per_s(args.repeats + 2)
        result["train_step"] = s
        lines += ["", "ConvNet-3 train step, 320 images (this process, memory retained):",
                  f"- lax VJP: {s['step_s']['lax']:.3f} s ({s['images_per_s']['lax']:.0f} img/s)",
                  f"- auto:    {s['step_s']['auto']:.3f} s ({s['images_per_s']['auto']:.0f} img/s)"
                  f"  → {s['step_s']['lax'] / s['step_s']['auto']:.2f}×",
                  f"- page faults per step {s['page_faults_per_step']:.0f}, "
                  f"sys {s['sys_s_per_step']:.3f} s"]
        print("\n".join(lines[-5:]), flush=True)
    if not args.no_allocator:
        ab = allocator_ab(rounds=2, repeats=args.repeats)
        result["allocator"] = ab

        def med(flag, mode):
            return float(np.median([r["step_s"][mode] for r in ab[flag]]))

        base, new = med("0", "lax"), med("1", "auto")
        lines += ["", "Allocator A/B (child processes, alternating, 2 rounds; median step s):",
                  "| allocator | lax VJP | auto | faults/step | sys s/step |",
                  "|---|---|---|---|---|"]
        for flag, name in (("0", "glibc default"), ("1", "retain_freed_memory")):
            lines.append(f"| {name} | {med(flag, 'lax'):.3f} | {med(flag, 'auto'):.3f} | "
                         f"{np.median([r['page_faults_per_step'] for r in ab[flag]]):.0f} | "
                         f"{np.median([r['sys_s_per_step'] for r in ab[flag]]):.3f} |")
        lines.append(f"\nToday's configuration (glibc default, lax VJP) {base:.3f} s/step → "
                     f"shipped (retained, auto) {new:.3f} s/step: **{base / new:.2f}×** images/s.")
        result["speedup_vs_before"] = base / new
        print("\n".join(lines[-6:]), flush=True)

    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"conv_{result['date']}")
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    with open(stem + ".md", "w") as fh:
        fh.write(f"# bench/conv.py, {result['date']}, jax {jax.__version__}\n\n" + "\n".join(lines)
                 + "\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
