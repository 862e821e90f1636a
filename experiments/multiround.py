"""Multi-round uniform forgetting (method.md §1; the paper's multi-round study, on CINIC-10).

    python -m experiments.multiround --workdir runs/multiround                 # embedded digits
    python -m experiments.multiround --config cinic10 --workdir runs/mr --data_dir D   # paper, GPU

Round 0 forgets ``forget_fraction`` (10%) of the training set; round r forgets 10% of the retain
set left after round r−1 (cumulative 10% → 19% → 27.1% over the default 3 rounds). Every method
continues from *its own* previous-round model (SCRUB-style teachers are that model too, since the
methods take their starting parameters as teacher). With condensation the k-means partition of
a seed is computed once (round 0, cached on disk) and reused; the free/residual split and Blend
are redone each round against the cumulative forget set. Each round's record carries ``round``;
its ``total_s`` is that round's unlearning plus its condensation (split + Blend), and round 0's
also includes the partition (embedding + k-means).

Which forget set a round acts on (``--set round_target=...``): ``new`` (default, as the
reference's ``multiround_cond_unlearn.py``): the images this round adds. A-AMU samples its forget
batches from them, SCRUB's forget passes run on them, and the MIA and the forget accuracy are of
them. ``cumulative``: every image forgotten so far. Either way the retain set is the cumulative
complement (what the model may keep), and condensation splits against the cumulative forget
set. Records carry ``round_target``, ``forget_size`` (cumulative) and ``new_forget_size``.

With Blend, A-SCRUB trains on the *full* retain set, as in the reference's
``multiround_cond_unlearn.py`` (its records say ``retain_set: "full"``; ``--set
'full_retain_methods=[]'`` gives it the reduced set like the other methods).

Resuming: finished rounds are not recomputed; each method's latest model is checkpointed under
``checkpoints/multiround/`` so the next round continues from it after an interruption. The rounds
are run by the one study loop (``experiments/study.py``).
"""

from __future__ import annotations

import sys

from experiments import cli
from experiments.configs.base import StudyConfig
from experiments.configs.uniform import DATASET_CONFIGS
from experiments.configs.uniform import get_config as uniform_config
from experiments.study import run_study

__all__ = ["get_config", "main", "run"]


def get_config(name: str = "digits", scale: str | None = None) -> StudyConfig:
    """The multi-round study on the dataset configuration ``name`` (10% per round, 3 rounds)."""
    cfg = uniform_config(name, 0.1, scale)
    cfg.name = "multiround"
    cfg.rounds = 3
    # the reference's multiround_cond_unlearn.py trains A-SCRUB on the full retain set even in
    # its condensed runs (retain_loader, where the other methods take condensed_loader)
    cfg.full_retain_methods = ("a_scrub",)
    cfg.notes = {**cfg.notes, "full_retain_methods": "a_scrub trains on the full retain set in "
                 "the Blend column, as the reference's multi-round script (--set "
                 "'full_retain_methods=[]' gives it the reduced set)"}
    return cfg


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the multi-round study ``config`` into ``workdir``; return all its records."""
    return run_study(config, workdir)


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv, configs=list(DATASET_CONFIGS),
                    scales=True)


if __name__ == "__main__":
    sys.exit(main())
