"""The torch side of ``bench/step_breakdown.py``: the reference's A-CF step cut into the same parts.

Run it from a virtualenv that has torch (torch is never a dependency of this project), with the
reference checkout (algebraicdianuj/DC_Unlearning) and the allocator settings our process gives
itself (``GLIBC_TUNABLES`` set to ``FAIR_GLIBC`` of ``bench/side_by_side.py``), back to back with
``bench/step_breakdown.py``::

    GLIBC_TUNABLES=... $SCRATCH/venv/bin/python bench/step_breakdown_torch.py \\
        --ref_dir $SCRATCH/DC_Unlearning

The parts have the names and shapes of the JAX table (NCHW here; 2 threads): per conv layer the
forward, input gradient, weight gradient (``torch.autograd.grad``; a backward is (forward +
backward) − forward) and the unseen forward; per layer ``F.group_norm`` with one group per
channel (the reference's instance norm is ``nn.GroupNorm(C, C)``), ReLU + ``F.avg_pool2d``; the
head; the reference's own sampling (``Accelerated_CF_Unlearner.sample_data``, called unchanged),
its ECDF/probit transform and MMD² with their gradient, ``torch.optim.Adam``'s step; the floor
(the reference ConvNet's forwards and backwards); and one A-CF step of the reference
(``train_per_epoch`` on a one-batch retain loader). Unseen forwards run under ``no_grad`` here;
the reference runs them with autograd on and detaches (a little more bookkeeping, no backward).
Rooflines: ``torch.mm`` 2048³ and a 256 MiB scale-and-copy, in the same process.
"""
import argparse
import json
import statistics
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--ref_dir", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--repeats", type=int, default=2)
p.add_argument("--json", default=None)
args = p.parse_args()
sys.path.insert(0, args.ref_dir)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from model.model_cnn_s import ConvNet  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from unlearn_methods.accelerated_cf import Accelerated_CF_Unlearner as ACF  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
W = 128
B, M, NU = 64, 256, 100
N = B + M
LAYERS = (("conv1 32x32 3->128", 32, 3), ("conv2 16x16 128->128", 16, 128),
          ("conv3 8x8 128->128", 8, 128))
parts = []  # (name, fn, flops, bytes, minus, group)


def add(name, fn, flops=0.0, nbytes=0.0, minus=None, group=""):
    parts.append((name, fn, flops, nbytes, minus, group))


for li, (name, hw, cin) in enumerate(LAYERS):
    x = torch.randn(N, cin, hw, hw, requires_grad=li > 0)
    xu = torch.randn(NU, cin, hw, hw)
    w = (torch.randn(W, cin, 3, 3) * 0.05).requires_grad_()
    bias = torch.zeros(W, requires_grad=True)
    g = torch.randn(N, W, hw, hw)
    fl = 2.0 * N * hw * hw * 9 * cin * W

    def fwd(x=x, w=w, bias=bias):
        with torch.no_grad():
            F.conv2d(x, w, bias, padding=1)

    add(f"{name}: forward", fwd, fl, group="conv")
    if li > 0:
        add(f"{name}: input gradient",
            lambda x=x, w=w, bias=bias, g=g: torch.autograd.grad(
                F.conv2d(x, w, bias, padding=1), x, g), fl, minus=f"{name}: forward", group="conv")
    add(f"{name}: weight gradient",
        lambda x=x, w=w, bias=bias, g=g: torch.autograd.grad(
            F.conv2d(x.detach(), w, bias, padding=1), (w, bias), g), fl,
        minus=f"{name}: forward", group="conv")

    def ufwd(xu=xu, w=w, bias=bias):
        with torch.no_grad():
            F.conv2d(xu, w, bias, padding=1)

    add(f"{name}: unseen forward", ufwd, 2.0 * NU * hw * hw * 9 * cin * W, group="conv")

for name, hw, _ in LAYERS:
    layer = name.split()[0].replace("conv", "layer")
    h = torch.randn(N, W, hw, hw, requires_grad=True)
    hu = torch.randn(NU, W, hw, hw)
    gn = torch.randn(N, W, hw, hw)
    gp = torch.randn(N, W, hw // 2, hw // 2)
    sc, bi = torch.ones(W, requires_grad=True), torch.zeros(W, requires_grad=True)
    act, act_u = 4.0 * N * hw * hw * W, 4.0 * NU * hw * hw * W

    def in_fwd(h=h, sc=sc, bi=bi):
        with torch.no_grad():
            F.group_norm(h, W, sc, bi)

    add(f"{layer} instance norm: forward", in_fwd, nbytes=2 * act, group="norm")
    add(f"{layer} instance norm: backward",
        lambda h=h, sc=sc, bi=bi, gn=gn: torch.autograd.grad(F.group_norm(h, W, sc, bi),
                                                              (h, sc, bi), gn),
        nbytes=3 * act, minus=f"{layer} instance norm: forward", group="norm")

    def rp_fwd(h=h):
        with torch.no_grad():
            F.avg_pool2d(F.relu(h), 2)

    add(f"{layer} relu + pool: forward", rp_fwd, nbytes=1.25 * act, group="pool")
    add(f"{layer} relu + pool: backward",
        lambda h=h, gp=gp: torch.autograd.grad(F.avg_pool2d(F.relu(h), 2), h, gp),
        nbytes=2.25 * act, minus=f"{layer} relu + pool: forward", group="pool")

    def u_fwd(hu=hu, sc=sc, bi=bi):
        with torch.no_grad():
            F.avg_pool2d(F.relu(F.group_norm(hu, W, sc, bi)), 2)

    add(f"{layer} norm + relu + pool: unseen forward", u_fwd, nbytes=3.25 * act_u, group="unseen")

feats = torch.randn(N, 2048, requires_grad=True)
lin = torch.nn.Linear(2048, 10)
yh = torch.randint(0, 10, (N,))
add("head (linear 2048->10 + CE): forward + backward",
    lambda: torch.autograd.grad(F.cross_entropy(lin(feats), yh), (feats, *lin.parameters())),
    flops=3 * 2.0 * N * 2048 * 10, group="head")

forget_ds = TensorDataset(torch.randn(500, 3, 32, 32), torch.zeros(500, dtype=torch.long))
test_ds = TensorDataset(torch.randn(1000, 3, 32, 32), torch.arange(1000) % 10)


def draw():
    fx, fy = ACF.sample_data(None, forget_ds, M)
    ACF.sample_data(None, test_ds, M, allowed_classes=torch.unique(fy).tolist())


add("A-AMU: draw forget + unseen samples (gathers)", draw, nbytes=2 * 2 * 4.0 * M * 32 * 32 * 3,
    group="a-amu")
unl = ACF.__new__(ACF)  # the reference's methods, without its constructor's copies
unl.device = torch.device("cpu")
qce = ACF.QuantileCrossEntropyLoss(reduction="none", k=2.0, K=60.0)
lf = torch.randn(M, 10, requires_grad=True)
lu, yu = torch.randn(NU, 10), torch.zeros(NU, dtype=torch.long)
yf = torch.zeros(M, dtype=torch.long)
add("A-AMU: ECDF + probit + MMD^2, value and gradient",
    lambda: torch.autograd.grad(unl.mmd_loss(qce(lu, yu), qce(lf, yf)), lf), group="a-amu")

net = ConvNet(channel=3, num_classes=10, net_width=W, net_depth=3, net_act="relu",
              net_norm="instancenorm", net_pooling="avgpooling", im_size=(32, 32))
opt = torch.optim.Adam(net.parameters(), lr=1e-4)
for prm in net.parameters():
    prm.grad = torch.ones_like(prm)
nparam = sum(prm.numel() for prm in net.parameters())
add("Adam update", opt.step, nbytes=4.0 * nparam * 7, group="optimiser")

xr, yr = torch.randn(B, 3, 32, 32), torch.randint(1, 10, (B,))
xf, yf = torch.randn(M, 3, 32, 32), torch.zeros(M, dtype=torch.long)
xu = torch.randn(NU, 3, 32, 32)


def floor(concat):
    net.zero_grad()
    if concat:
        loss = F.cross_entropy(net(torch.cat([xr, xf])), torch.cat([yr, yf]))
    else:
        loss = F.cross_entropy(net(xr), yr) + F.cross_entropy(net(xf), yf)
    with torch.no_grad():
        net(xu)
    loss.backward()


add("floor: forwards + backwards, concatenated", lambda: floor(True), group="whole")
add("floor: forwards + backwards, separate calls", lambda: floor(False), group="whole")
acf_net = ConvNet(channel=3, num_classes=10, net_width=W, net_depth=3, net_act="relu",
                  net_norm="instancenorm", net_pooling="avgpooling", im_size=(32, 32))
acf_opt = torch.optim.Adam(acf_net.parameters(), lr=1e-4)
loader = DataLoader(TensorDataset(xr, yr), batch_size=B)
add("A-CF step", lambda: unl.train_per_epoch(acf_net, torch.nn.CrossEntropyLoss(), qce, acf_opt,
                                               loader, forget_ds, test_ds, 34.0), group="whole")

a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
big = torch.randn(64 * 2**20)


def best(fn, n=5):
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


gflops = 2.0 * 2048**3 / best(lambda: torch.mm(a, b)) / 1e9
gbs = 2 * big.numel() * 4 / best(lambda: big.mul(1.0001)) / 1e9
times = {pt[0]: [] for pt in parts}
for pt in parts:  # warm-up: oneDNN builds its primitives on first use
    pt[1]()
for _ in range(args.rounds):
    for name, fn, *_ in parts:
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        times[name].append((time.perf_counter() - t0) / args.repeats)
med = {k: statistics.median(v) for k, v in times.items()}
rows = []
for name, _, fl, nb, minus, group in parts:
    ms = 1e3 * (med[name] - (med[minus] if minus else 0.0))
    roof = 1e3 * (fl / (gflops * 1e9) + nb / (gbs * 1e9))
    rows.append({"part": name, "group": group, "ms": ms, "roofline_ms": roof or None,
                 "share": roof / ms if roof and ms > 0 else None,
                 "gflops": fl / ms / 1e6 if fl and ms > 0 else None})
print(f"torch {torch.__version__}, {args.threads} threads; batch {B} retain + {M} forget trained, "
      f"{NU} unseen forward; GEMM roofline {gflops:.0f} GFLOPS (torch.mm 2048^3), memory "
      f"{gbs:.1f} GB/s (copy of 256 MiB)")
print(f"{'part':58s} {'ms':>8s} {'roofline':>9s} {'share':>6s} {'GFLOPS':>7s}")
for r in rows:
    roof = f"{r['roofline_ms']:9.1f}" if r["roofline_ms"] else f"{'':9s}"
    share = f"{100 * r['share']:5.0f}%" if r["share"] else f"{'':6s}"
    gf = f"{r['gflops']:7.0f}" if r["gflops"] else ""
    print(f"{r['part']:58s} {r['ms']:8.1f} {roof} {share} {gf}")
total = sum(r["ms"] for r in rows if r["group"] != "whole")
print(f"{'sum of the parts':58s} {total:8.1f}")
groups = {}
for r in rows:
    groups[r["group"]] = groups.get(r["group"], 0.0) + r["ms"]
print("by group (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in groups.items() if k != "whole"))
if args.json:
    with open(args.json, "w") as f:
        json.dump({"torch": torch.__version__, "gemm_gflops": gflops, "memory_gbs": gbs,
                   "rounds": args.rounds, "rows": rows, "sum_ms": total, "raw_s": times}, f,
                  indent=2)
