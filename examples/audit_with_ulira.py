"""Audit one unlearning method per example with U-LiRA, from many models trained at once.

    python examples/audit_with_ulira.py                            # A-CF, 8 + 8 models, K = 20
    python examples/audit_with_ulira.py --shadows 32 --targets 16 --forget_size 40 --epochs 40
    python examples/audit_with_ulira.py --method retrain           # the sanity check: ≈ 0.5

(the second line: the study's sizes, ``experiments/ulira.py``, for A-CF alone).

What it shows (the sequence of ``experiments/ulira.py``, with public library functions only):

1. K audited training examples F (uniform); every other training example goes to a random half
   H_i of each of N = shadows + targets models (``jaxunlearn.ensemble.random_halves``);
2. the N originals, model i on H_i ∪ F, trained in one stacked, vmapped loop
   (``ensemble.init_models`` + ``train.fit(..., include=..., models=N)``);
3. the reference population: Retrain on H_i from a fresh initialisation with the originals' own
   schedule (exact unlearning of F), again N models at once (``run_method(..., models=N)``);
4. the audited method unlearns F from all N originals at once, model i keeping H_i
   (``unlearn.stack_unlearn_data`` + ``run_method(..., models=N)``);
5. φ = each model's logit-scaled confidence on each example of F
   (``ensemble.predict_models`` + ``mia.logit_confidence(..., phi="exact")``), and
   ``audit.ulira``: per-example Gaussians fitted on the shadow models of both populations, the
   likelihood-ratio test on the target models. Accuracy 0.5 = the method's models cannot be
   told from retrained ones; the originals (no unlearning) are the positive control.

Expected output (2026-12-07, 2-core CPU shared with other jobs, defaults; ≈ 3.5 min wall
clock, of which about a minute compiling)::

    digits seed 0: K = 20 audited examples F; 16 models per population (8 shadows + 8 targets),
    each trained on F and a random half of the other 788 training images
    population        U-LiRA acc [95% CI]    AUC  forget acc  test acc
    retrain (ref)                                      96.6%     96.8%
    original         0.628 [0.544, 0.713]  0.677      100.0%     96.7%
    a_cf             0.647 [0.553, 0.741]  0.712       95.6%     96.1%
    a_cf unlearned 16 models in 8.7 s (+ 12.3 s compiling); 0.5 = indistinguishable from Retrain

``--method retrain`` (the sanity check: a second, independent Retrain population) gives
``retrain 0.494 [0.406, 0.572] 0.488 95.9% 96.7%``. A-CF's models are as distinguishable from
retrained ones as the originals are: on uniform forgetting of a few digits it does not remove
the per-example membership signal, as the study found with 48 models (``docs/reproduce.md``
§10.2: A-CF 67.5 [62.3, 73.0], originals 69.8 [64.0, 75.5], Retrain 52.3 [48.2, 56.6]).

With 8 targets and K = 20 there are only 2 × 160 attacked pairs: the intervals are wide, and
tell a method apart from 0.5 only when it is far from it. The study (``python -m
experiments.ulira``) uses 32 + 16 models, K = 40 and 40 epochs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import numpy as np

from jaxunlearn import audit, data, ensemble, optim, pools, train
from jaxunlearn.hostmem import retain_freed_memory
from jaxunlearn.mia import logit_confidence
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method, stack_unlearn_data

# the digits study's deviations from the methods' defaults (experiments/configs/digits.py):
# the A-AMU methods at batch 16 (digits' retain set is only a few batches of 64)
DIGITS_HPARAMS = {name: dict(batch_size=16) for name in ("a_cf", "a_scrub", "a_sparse")}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="a_cf", help="a registered unlearning method")
    p.add_argument("--shadows", type=int, default=8, help="shadow models per population (>= 2)")
    p.add_argument("--targets", type=int, default=8, help="target models per population")
    p.add_argument("--forget_size", type=int, default=20, help="K audited examples")
    p.add_argument("--epochs", type=int, default=20,
                   help="epochs of the originals and Retrain (the study: 40)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws of the CIs")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; return ``{"method": ULiRAResult, "original": ULiRAResult, ...}``."""
    args = parse_args(argv)
    n = args.shadows + args.targets
    keys = dict(zip(("forget", "halves", "init", "train", "reference", "unlearn"),
                    jax.random.split(jax.random.key(args.seed), 6), strict=True))

    ds = data.load_dataset("digits")
    splits = data.make_splits(ds, unseen_fraction=0.5, seed=args.seed)
    x, y = splits.train_x, splits.train_y

    # --- who trains on what: F in every model, each other example in a random half ----------
    order = np.asarray(jax.random.permutation(keys["forget"], len(y)))
    forget_idx, rest = np.sort(order[:args.forget_size]), np.sort(order[args.forget_size:])
    halves = ensemble.random_halves(keys["halves"], rest.size, n)  # [N, n_rest] bool
    pool = pools.make_pool(x, y)  # on device once, shared by the N models
    include = np.zeros((n, pool.y.shape[0]), bool)  # [N, capacity]: model i's rows
    include[:, rest] = halves
    include[:, forget_idx] = True

    # --- the N originals, in one stacked loop -------------------------------------------------
    model = build_model("convnet", splits.num_classes, depth=2, width=64)
    init_fn = init_fn_for(model, x.shape[1:])
    # the digits study's schedule for the originals (SGD, warm-up + cosine), every model for all
    # its epochs (no validation selection)
    schedule = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=args.epochs,
                    warmup_epochs=args.epochs // 10, batch_size=64)
    originals = train.fit(
        model.apply, ensemble.init_models(init_fn, jax.random.split(keys["init"], n)), pool,
        jax.random.split(keys["train"], n), epochs=args.epochs, batch_size=64,
        optimizer=optim.sgd(schedule["lr"], schedule["momentum"], schedule["weight_decay"]),
        lr_schedule=optim.cosine_with_warmup(schedule["lr"], args.epochs,
                                             schedule["warmup_epochs"]),
        include=include, models=n).params

    # --- unlearn F from every model: model i keeps its half H_i --------------------------------
    fx, fy = x[forget_idx], y[forget_idx]
    stacked = stack_unlearn_data([
        make_unlearn_data((x[rest[h]], y[rest[h]]), (fx, fy), (splits.unseen_x, splits.unseen_y),
                          splits.num_classes) for h in halves])
    # exact unlearning, with the originals' schedule: otherwise the attack could tell the two
    # populations apart by their training recipes instead of by membership
    retrain = make_method("retrain", model.apply, init_fn=init_fn, **schedule)
    reference = run_method(retrain, originals, stacked, jax.random.split(keys["reference"], n),
                           models=n).params
    hparams = schedule if args.method == "retrain" else DIGITS_HPARAMS.get(args.method, {})
    method = make_method(args.method, model.apply, init_fn=init_fn, **hparams)
    unlearned = run_method(method, originals, stacked, jax.random.split(keys["unlearn"], n),
                           models=n)

    # --- φ on F for every model, then the audit -----------------------------------------------
    labels = np.broadcast_to(fy, (n, len(fy)))

    def phi_and_acc(params):
        logits = ensemble.predict_models(model.apply, params, fx)  # [N, K, C]
        test = ensemble.predict_models(model.apply, params, splits.test_x)
        return (logit_confidence(logits, labels, phi="exact"),  # [N, K]
                100 * np.mean(logits.argmax(-1) == fy), 100 * np.mean(test.argmax(-1) ==
                                                                       splits.test_y))

    ref_phi, ref_forget, ref_test = phi_and_acc(reference)
    s = args.shadows
    rows, results = {}, {}
    for name, params in (("original", originals), (args.method, unlearned.params)):
        phi, forget_acc, test_acc = phi_and_acc(params)
        res = audit.ulira(phi[:s], ref_phi[:s], phi[s:], ref_phi[s:], n_boot=args.bootstrap,
                          seed=args.seed)
        results[name], rows[name] = res, (forget_acc, test_acc)

    print(f"digits seed {args.seed}: K = {len(forget_idx)} audited examples F; {n} models per "
          f"population ({s} shadows + {args.targets} targets),")
    print(f"each trained on F and a random half of the other {rest.size} training images")
    print(f"{'population':14s} {'U-LiRA acc [95% CI]':>22s} {'AUC':>6s} {'forget acc':>11s} "
          f"{'test acc':>9s}")
    print(f"{'retrain (ref)':14s} {'':>22s} {'':>6s} {ref_forget:10.1f}% {ref_test:8.1f}%")
    for name, res in results.items():
        lo, hi = res.accuracy_ci
        ci = f"{res.accuracy:.3f} [{lo:.3f}, {hi:.3f}]"
        print(f"{name:14s} {ci:>22s} {res.auc:6.3f} {rows[name][0]:10.1f}% "
              f"{rows[name][1]:8.1f}%")
    print(f"{args.method} unlearned {n} models in {unlearned.unlearn_s:.1f} s "
          f"(+ {unlearned.compile_s:.1f} s compiling); 0.5 = indistinguishable from Retrain")
    return {"method": results[args.method], "original": results["original"],
            "forget_acc": rows[args.method][0], "reference_forget_acc": ref_forget}


if __name__ == "__main__":
    # before JAX's first computation: XLA:CPU's buffers stop page-faulting (docs/speed.md)
    retain_freed_memory(single_arena=False)
    main()
