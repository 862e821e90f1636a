"""The reference's A-CF epoch in torch, timed for ``bench/gpu_check.py --reference DIR``.

``gpu_check.py`` runs this file in a child process with a python that has torch (``--ref_python``):
torch is never imported by the project itself. It imports the reference's modules from
``--ref_dir`` (a checkout of algebraicdianuj/DC_Unlearning) unchanged and times, on ``--device``
(default: cuda if torch sees one, else cpu), one A-CF epoch on the full retain set and one on a
reduced retain set of ``--reduced`` images (the size of gpu_check's own reduced set), as the
reference's ``cond_unlearn.py`` calls it:
``unlearn_methods.accelerated_cf.Accelerated_CF_Unlearner(original_model, retain_dataloader,
forget_dataset, test_dataset, weight_distribution, k, K, device).train(epochs=1, learning_rate)``
with the ``acf_unlearning`` settings of the reference's
``hyperparameters/cifar10_resnet18_hyperparameters.json`` (lr 2.4e-4, weight 34, k 2, K 60) and
``DataLoader(..., batch_size=--batch_size, shuffle=True)`` over ``utils.utils.TensorDatasett``.

Same sizes and model as gpu_check's ``--size`` (``SIZES``; ``tests/test_gpu_check.py`` checks they
agree): synthetic class-structured images made with numpy (NCHW, float32), class 0 forgotten,
retain = the other 9 classes, the unseen pool T = a stratified 70% of the test set wrapped in a
``torch.utils.data.Subset`` (the type the reference's ``random_split`` gives). The model is freshly
initialised (timings only): at ``paper`` the reference's ``model.networks.ResNet18`` (instance
norm, width 64: what its ``utils.loading_model.get_model`` builds for ``resnet18``; no torchvision
needed); at ``tiny`` its ``model.model_cnn_s.ConvNet`` with gpu_check tiny's shape (depth 2, width
16, instance norm, ReLU, average pooling, 16×16 inputs). The reduced set is ``--reduced`` retain
images drawn at random (the reference's is residual images plus Blend images: same shapes, so
the same cost per step). Each timer covers the unlearner's construction and ``.train()`` (as the
reference's ``starting_time`` does) and synchronises the device before it is read; an untimed
A-CF epoch over one batch first pays the one-off set-up (CUDA context, cuDNN handles), which
stands beside our compile time, kept apart too.

``utils/utils.py`` imports matplotlib and ``accelerated_cf.py`` imports scipy at top level; neither
is used by A-CF or ``TensorDatasett``, so where they are missing (the GPU image) they are stubbed
and the JSON says so. Writes the JSON to ``--out``; exits non-zero with a one-line reason on error.

Usage (gpu_check.py does this)::

    python bench/gpu_check_reference.py --ref_dir DC_Unlearning --size tiny --reduced 120 \\
        --out ref.json
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import sys
import time
import types

import numpy as np

NUM_CLASSES = 10
FORGET_CLASS = 0
UNSEEN_FRACTION = 0.7  # gpu_check's unseen pool: the stratified 70% of the test set ("test70")
# gpu_check.SIZES' data and model (the test checks that they agree)
SIZES = {
    "paper": dict(train_per_class=5000, test_per_class=1000, image=(32, 32, 3),
                  model=("resnet18", {"width": 64})),
    "tiny": dict(train_per_class=40, test_per_class=10, image=(16, 16, 3),
                 model=("convnet", {"depth": 2, "width": 16})),
}
HPARAMS = os.path.join("hyperparameters", "cifar10_resnet18_hyperparameters.json")
NEEDED = ("unlearn_methods/accelerated_cf.py", "model/networks.py", "model/model_cnn_s.py",
          "utils/utils.py", HPARAMS)


def _stub_if_absent(module: str, attrs: tuple[str, ...], stubbed: list[str]) -> None:
    """Put an empty ``module`` (and its parents) in ``sys.modules`` if it cannot be imported."""
    try:
        importlib.import_module(module)
        return
    except ImportError:
        pass
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        sys.modules.setdefault(name, types.ModuleType(name))
        if i > 1:
            setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[name])

    def absent(*_a, **_k):
        raise ImportError(f"{module} is stubbed by gpu_check_reference.py")

    for a in attrs:
        setattr(sys.modules[module], a, absent)
    stubbed.append(module)


def import_reference(ref_dir: str) -> types.SimpleNamespace:
    """The reference's modules A-CF needs, imported unchanged from ``ref_dir``."""
    missing = [p for p in NEEDED if not os.path.isfile(os.path.join(ref_dir, p))]
    if missing:
        raise SystemExit(f"--ref_dir {ref_dir} is not a DC_Unlearning checkout (no {missing[0]})")
    sys.path.insert(0, ref_dir)
    os.environ.setdefault("MPLBACKEND", "Agg")
    stubbed: list[str] = []
    _stub_if_absent("matplotlib.pyplot", (), stubbed)  # utils/utils.py, top level, unused here
    _stub_if_absent("scipy.signal", ("savgol_filter",), stubbed)  # accelerated_cf.py, unused
    from model.model_cnn_s import ConvNet
    from model.networks import ResNet18
    from unlearn_methods.accelerated_cf import Accelerated_CF_Unlearner
    from utils.utils import TensorDatasett

    with open(os.path.join(ref_dir, HPARAMS)) as f:
        hparams = json.load(f)["acf_unlearning"]
    return types.SimpleNamespace(ConvNet=ConvNet, ResNet18=ResNet18, TensorDatasett=TensorDatasett,
                                 Accelerated_CF_Unlearner=Accelerated_CF_Unlearner,
                                 hparams=hparams, stubbed=stubbed)


def build_model(ref: types.SimpleNamespace, size: dict):
    """The reference's model for ``size`` and a one-line description of it."""
    name, kw = size["model"]
    h, w, c = size["image"]
    if name == "resnet18":
        if kw.get("width", 64) != 64:
            raise SystemExit("the reference's ResNet18 has width 64 only")
        return (ref.ResNet18(channel=c, num_classes=NUM_CLASSES),
                "model.networks.ResNet18 (instance norm, width 64), freshly initialised")
    if name == "convnet":
        net = ref.ConvNet(channel=c, num_classes=NUM_CLASSES, net_width=kw["width"],
                          net_depth=kw["depth"], net_act="relu", net_norm="instancenorm",
                          net_pooling="avgpooling", im_size=(h, w))
        return net, (f"model.model_cnn_s.ConvNet (depth {kw['depth']}, width {kw['width']}, "
                     f"instance norm, relu, avgpool, {h}x{w}), freshly initialised")
    raise SystemExit(f"no reference model for {name!r}")


def synthetic(size: dict, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class-structured CIFAR-shaped stand-in images ``[n, c, h, w]`` (float32), labels (int64):
    per class four smooth prototypes (noise at a quarter of the size, upsampled 4×) plus pixel
    noise, as gpu_check's ``synthetic_dataset`` (timings only: the cost does not depend on it)."""
    rng = np.random.default_rng([seed, 2026])
    h, w, c = size["image"]
    protos = rng.standard_normal((NUM_CLASSES, 4, c, h // 4, w // 4), dtype=np.float32)
    protos = protos.repeat(4, axis=-2).repeat(4, axis=-1)
    out = {}
    for split, n in (("train", size["train_per_class"]), ("test", size["test_per_class"])):
        y = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), n)
        x = protos[y, rng.integers(0, 4, y.size)]
        x += np.float32(0.8) * rng.standard_normal(x.shape, dtype=np.float32)
        out[split] = (x, y)
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _write(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--ref_dir", required=True, help="DC_Unlearning checkout")
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--reduced", type=int, default=None,
                   help="size of the reduced retain set (default: not timed)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    try:
        import torch
        from torch.utils.data import DataLoader, Subset
    except ImportError as e:
        raise SystemExit(f"torch is not importable by {sys.executable} ({e}); give "
                         "--ref_python a python with torch") from None
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device_name}, but torch {torch.__version__} (CUDA "
                         f"{torch.version.cuda}) sees no CUDA device")
    device = torch.device(device_name)
    ref_dir = os.path.abspath(args.ref_dir)
    ref = import_reference(ref_dir)
    size = SIZES[args.size]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    on_cuda = device.type == "cuda"
    record: dict = {
        "ok": False, "size": args.size, "ref_dir": ref_dir,
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if on_cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else _cpu_name(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "stubbed": ref.stubbed, "hparams": ref.hparams, "batch_size": args.batch_size,
        "seconds": {}, "retain": {}, "steps": {},
    }
    if on_cuda:
        free, total = torch.cuda.mem_get_info(device)
        record["cuda_memory_at_start"] = {"free_bytes": free, "total_bytes": total}
    print(f"reference A-CF: torch {torch.__version__} on {device} ({record['device_name']}"
          f"{f', {free / 2**30:.1f} of {total / 2**30:.1f} GiB free' if on_cuda else ''}), "
          f"{record['torch_num_threads']} threads; stubbed: {', '.join(ref.stubbed) or 'none'}",
          flush=True)

    t0 = time.perf_counter()
    data = synthetic(size, args.seed)
    x, y = (torch.from_numpy(a) for a in data["train"])
    forget = np.flatnonzero(data["train"][1] == FORGET_CLASS)
    retain = np.flatnonzero(data["train"][1] != FORGET_CLASS)
    forget_ds = ref.TensorDatasett(x[forget], y[forget])
    retain_ds = ref.TensorDatasett(x[retain], y[retain])
    rng = np.random.default_rng(args.seed)
    test_y = data["test"][1]
    unseen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(test_y == c))[
        :int(UNSEEN_FRACTION * size["test_per_class"])] for c in range(NUM_CLASSES)]))
    unseen_ds = Subset(ref.TensorDatasett(*(torch.from_numpy(a) for a in data["test"])),
                       unseen.tolist())
    sets = {"a_cf_full": retain_ds}
    if args.reduced is not None:
        if not 0 < args.reduced <= retain.size:
            raise SystemExit(f"--reduced {args.reduced} is not in 1..{retain.size}")
        pick = np.sort(rng.choice(retain, args.reduced, replace=False))
        sets["a_cf_reduced"] = ref.TensorDatasett(x[pick], y[pick])
    torch.manual_seed(args.seed)
    model0, record["model"] = build_model(ref, size)
    model0 = model0.to(device)
    record["seconds"]["data_model"] = time.perf_counter() - t0
    record["sizes"] = {"train": int(y.numel()), "forget": len(forget_ds), "retain": len(retain_ds),
                       "unseen_pool": len(unseen_ds), "image_chw": list(x.shape[1:])}
    print(f"data: {record['sizes']}; model: {record['model']}", flush=True)

    def acf_epoch(retain_set, seed: int) -> tuple[float, int]:
        model = copy.deepcopy(model0)
        torch.manual_seed(seed)
        loader = DataLoader(retain_set, batch_size=args.batch_size, shuffle=True)
        hp = ref.hparams
        sync()
        t = time.perf_counter()
        unlearner = ref.Accelerated_CF_Unlearner(
            original_model=model, retain_dataloader=loader, forget_dataset=forget_ds,
            test_dataset=unseen_ds, weight_distribution=hp["weight_distribution"], k=hp["k"],
            K=hp["K"], device=device)
        unlearner.train(epochs=1, learning_rate=hp["acf_lr"])
        sync()
        return time.perf_counter() - t, len(loader)

    one_batch = ref.TensorDatasett(*retain_ds[:args.batch_size])
    record["seconds"]["warmup_one_batch"], _ = acf_epoch(one_batch, args.seed + 1)
    print(f"warm-up (an A-CF epoch over one batch, untimed): "
          f"{record['seconds']['warmup_one_batch']:.2f} s", flush=True)
    for i, (name, ds) in enumerate(sets.items()):
        seconds, steps = acf_epoch(ds, args.seed + 2 + i)
        record["seconds"][name] = seconds
        record["retain"][name], record["steps"][name] = len(ds), steps
        if on_cuda:
            record.setdefault("cuda_peak_bytes", {})[name] = torch.cuda.max_memory_allocated(device)
        print(f"reference A-CF epoch on {len(ds):,} retain images ({steps} "
              f"step{'s' * (steps != 1)} of {args.batch_size}): {seconds:.2f} s", flush=True)
        _write(args.out, record)
    record["ok"] = True
    record["wall_s"] = time.perf_counter() - t_start
    _write(args.out, record)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
