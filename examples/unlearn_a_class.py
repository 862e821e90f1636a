"""Forget one class of the embedded digits with A-CF, and score the unlearned model.

    python examples/unlearn_a_class.py              # seed 4: A-CF forgets the class
    python examples/unlearn_a_class.py --seed 0     # seed 0: it does not (see below)

What it shows, with the library's public functions only:

1. ``jaxunlearn.data``: scikit-learn's 8×8 digits (shipped, no download), split into train /
   validation / unseen pool / test as the digits study does, and a class-wise forget request;
2. ``jaxunlearn.train.fit``: the original ConvNet-2 (40 epochs of SGD, warm-up + cosine, the
   epoch best on the validation slice);
3. ``jaxunlearn.unlearn``: A-CF (fine-tuning on the retain set plus the A-AMU regulariser) at
   the digits study's settings: the paper's one epoch, lr, λ, k and κ, at batch 16;
4. ``jaxunlearn.evaluate.evaluate_unlearning``: retain / forget / test accuracy, the test
   accuracy on the retained classes, the paper's MIA score and its plain AUC, before and after.

Expected output (2026-12-07, 2-core CPU shared with other jobs, defaults: seed 4; ≈ 45 s, most
of it compiling)::

    digits seed 4: forgetting class 8 (78 images), retaining 730; A-CF batch 16, 1 epoch(s)
                                    original      A-CF
    retain acc %                       100.0      99.9
    forget acc %                       100.0       0.0
    test acc %                          99.3      88.6
    test acc, retained classes %        99.3      98.3
    MIA score (50 = ideal)              52.0      57.1
    MIA plain AUC                       52.0      57.1
    A-CF took 0.81 s (+ 12.2 s compiling)
    forgotten (forget acc <= 5%)

Test accuracy over all classes falls by the forgotten class's tenth; on the retained classes it
stays. A-CF does NOT forget the class on every seed: at these settings it forgot it on 5 of the
10 seeds tried (seed 4, the default, is one of them), kept 29–50% forget accuracy on four and
all of it on one (seed 2). Each run prints which (2026-12-07, this script, ``--seed N``):

    seed  class  forget acc after  test acc, retained classes  MIA score  plain AUC
       0      7              35.8                 98.8 → 99.0       95.5       38.3
       1      7              49.4                 99.5 → 97.3       42.6       42.6
       2      6             100.0                 99.3 → 98.5       45.4       45.4
       3      5              29.3                 99.0 → 97.5       59.8       59.8
       4      8               0.0                 99.3 → 98.3       57.1       57.1
       5      3               0.0                 99.0 → 98.5       47.6       47.6
       6      7               1.2                 99.8 → 99.3       94.3       33.3
       7      0              50.0                 98.8 → 98.0       46.0       46.0
       8      7               0.0                 99.3 → 98.5       53.5       53.5
       9      5               0.0                 99.0 → 98.3       56.2       56.2

(Forget accuracy before: 100.0 on every seed.) The digits study reports the same bimodal outcome
(``docs/reproduce.md`` §1: its seeds 0, 1, 2 forget 0%, 65%, 100%); with that study's keys
(``experiments/seeds.py``) this script gives its numbers exactly (seed 0: 0.0%, seed 1: 65.4%).
On digits the forgotten class's loss is already close to unseen data's, so A-AMU's regulariser
has little to match. The MIA score is the reference's procedure: when the class is (partly)
forgotten its second attack can set the class against every test class and land far from 50
(seeds 0 and 6); rank by the plain AUC.

Batch 16 is the digits study's choice (``experiments/configs/digits.py``): with Adam, the
distance A-CF travels grows with its number of steps, and one epoch of digits' ≈727-image retain
set is only 12 steps at the paper's batch 64 (about 700 on CIFAR-10); batch 16 gives 46. At
``--batch_size 64`` seed 4 keeps 14.1% forget accuracy (0.0 at 16) and seed 0 keeps 100%.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax

from jaxunlearn import data, optim, pools, train
from jaxunlearn.evaluate import evaluate_unlearning
from jaxunlearn.hostmem import retain_freed_memory
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method

ROWS = (("retain_acc", "retain acc %"), ("forget_acc", "forget acc %"),
        ("test_acc", "test acc %"), ("test_retained_acc", "test acc, retained classes %"),
        ("mia", "MIA score (50 = ideal)"), ("mia_auc", "MIA plain AUC"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=4,
                   help="splits, forgotten class and keys (4: a seed where A-CF forgets)")
    p.add_argument("--forget_class", type=int, default=None,
                   help="class to forget (default: drawn from the seed, as the study does)")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the original model")
    p.add_argument("--batch_size", type=int, default=16, help="A-CF's batch (digits study: 16)")
    p.add_argument("--unlearn_epochs", type=int, default=1, help="A-CF's epochs (paper: 1)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; return ``{"original": metrics, "a_cf": metrics, ...}``."""
    args = parse_args(argv)
    # one root key per run, split by purpose
    k_init, k_train, k_unlearn = jax.random.split(jax.random.key(args.seed), 3)

    # --- data: the digits study's splits and a class-wise forget request --------------------
    ds = data.load_dataset("digits")  # 898 train / 899 test images, 8×8×1, normalised
    # digits has no official test split (the loader halves the data): half of the test half is
    # the unseen pool A-AMU draws from, half the evaluation set (≈45 images of a class: the MIA)
    splits = data.make_splits(ds, unseen_fraction=0.5, seed=args.seed)
    forget = data.make_forget_set(splits.train_y, "classwise", num_classes=splits.num_classes,
                                  seed=args.seed, classes=args.forget_class)
    x, y = splits.train_x, splits.train_y
    retain_xy = (x[forget.retain_idx], y[forget.retain_idx])
    forget_xy = (x[forget.forget_idx], y[forget.forget_idx])
    test_xy = (splits.test_x, splits.test_y)

    # --- the original model: ConvNet-2 at 8×8 (a 2·2·64 = 256-d embedding) ------------------
    model = build_model("convnet", splits.num_classes, depth=2, width=64)
    init_fn = init_fn_for(model, x.shape[1:])
    lr = 0.05  # 0.1 (the paper's, CIFAR-10) is unstable at this size
    original = train.fit(
        model.apply, init_fn(k_init), pools.make_pool(x, y), k_train, epochs=args.epochs,
        batch_size=64, optimizer=optim.sgd(lr, momentum=0.9, weight_decay=5e-4),
        lr_schedule=optim.cosine_with_warmup(lr, args.epochs, warmup_epochs=args.epochs // 10),
        val=(splits.val_x, splits.val_y)).params

    # --- A-CF: forget the class --------------------------------------------------------------
    # batch 16, not the paper's 64: digits' retain set is ≈12 batches of 64, too few A-AMU
    # (Adam) steps to move the model; 16 gives 46 steps, and its 4·16 = 64 forget samples per
    # step still cover most of the ≈81-image forget set. Everything else is the paper's.
    method = make_method("a_cf", model.apply, batch_size=args.batch_size,
                         epochs=args.unlearn_epochs)
    unlearn_data = make_unlearn_data(retain_xy, forget_xy, (splits.unseen_x, splits.unseen_y),
                                     splits.num_classes)
    out = run_method(method, original, unlearn_data, k_unlearn)

    # --- score both models: retain/forget/test accuracy, the paper's MIA, its plain AUC -------
    results = {name: evaluate_unlearning(model.apply, params, retain=retain_xy,
                                         forget=forget_xy, test=test_xy, seed=args.seed)
               for name, params in (("original", original), ("a_cf", out.params))}
    print(f"digits seed {args.seed}: forgetting class {forget.classes[0]} "
          f"({len(forget.forget_idx)} images), retaining {len(forget.retain_idx)}; "
          f"A-CF batch {args.batch_size}, {args.unlearn_epochs} epoch(s)")
    print(f"{'':30s} {'original':>9s} {'A-CF':>9s}")
    for key, label in ROWS:
        print(f"{label:30s} {results['original'][key]:9.1f} {results['a_cf'][key]:9.1f}")
    print(f"A-CF took {out.unlearn_s:.2f} s (+ {out.compile_s:.1f} s compiling)")
    forgot = results["a_cf"]["forget_acc"] <= 5.0
    print("forgotten (forget acc <= 5%)" if forgot else
          f"NOT forgotten: A-CF kept {results['a_cf']['forget_acc']:.1f}% forget accuracy on this "
          "seed (it forgets digits classes on some seeds only; see the docstring)")
    return {**results, "forget_class": forget.classes[0], "forgot": forgot,
            "unlearn_s": out.unlearn_s}


if __name__ == "__main__":
    # before JAX's first computation: XLA:CPU's buffers stop page-faulting (docs/speed.md)
    retain_freed_memory(single_arena=False)
    main()
