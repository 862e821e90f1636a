"""Tables of a study's records: ``results.md`` in the paper's table shape, means over seeds.

Every cell that summarises seeds is the mean with an interval that cannot leave the range of
what was measured (:data:`INTERVAL_NOTE`): the min–max over the seeds when there are fewer
than 5, else a 95% bootstrap percentile interval. (A Student-t interval over 3 seeds of a
bimodal outcome, forgetting on one seed and not on another, would read "55 ± 126" for an
accuracy.)
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from experiments import plots
from experiments.io import atomic_write
from experiments.paper import PAPER_LABEL, paper_rows

__all__ = ["INTERVAL_NOTE", "ablation_table", "average_gap", "column_label", "format_ci",
           "headline", "paper_table", "per_seed_table", "results_table", "rounds_table",
           "seed_interval", "write_report"]

INTERVAL_NOTE = ("mean [min, max] over the seeds when there are fewer than 5, else mean [95% "
                 "bootstrap percentile interval]")
_BOOTSTRAP = 2000
_FORGOT_TOLERANCE = 5.0  # points of forget accuracy from Retrain's, same seed and column

_GAP_FIELDS = ("forget_acc", "retain_acc", "test_acc", "mia")


def column_label(method: str, condensed: bool) -> str:
    """How a row is named in logs, progress bars and plots: ``"cf"``, ``"cf +DC"`` (with Blend)."""
    return f"{method}{' +DC' if condensed else ''}"


def seed_interval(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(mean, low, high)`` of the finite values (:data:`INTERVAL_NOTE`); ``None`` if none.

    Fewer than 5 values: low and high are the min and the max. Otherwise the 2.5 and 97.5
    percentiles of the means of 2,000 resamples with replacement (a fixed generator, so a
    table is reproducible). Either way the interval lies within the values' own range.
    """
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if vals.size == 0:
        return None
    mean = float(vals.mean())
    if vals.size < 5:
        return mean, float(vals.min()), float(vals.max())
    draws = np.random.default_rng(0).choice(vals, size=(_BOOTSTRAP, vals.size)).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return mean, float(low), float(high)


def format_ci(values: Sequence[float], digits: int = 2) -> str:
    """``"mean [low, high]"`` (:func:`seed_interval`), the mean alone for one value, ``"–"`` for
    none."""
    got = seed_interval(values)
    if got is None:
        return "–"
    mean, low, high = got
    if low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _group(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], bool(r["condensed"]), int(r.get("round", 0)))].append(r)
    return groups


def _paired_with_retrain(records: Sequence[dict], method: str, condensed: bool,
                         round_: int) -> list[tuple[dict, dict]]:
    """``(record, Retrain's record)`` for each seed where both exist, same column and round."""
    def of(m):
        return [r for r in records if r["method"] == m
                and bool(r["condensed"]) == condensed and int(r.get("round", 0)) == round_]

    ref = {r["seed"]: r for r in of("retrain")}
    return [(r, ref[r["seed"]]) for r in of(method) if r["seed"] in ref]


def average_gap(records: Sequence[dict], method: str, condensed: bool, round_: int = 0) -> list:
    """Per seed: mean |Δ| to Retrain (same seed, same condensation) over forget/retain/test
    accuracy and MIA (docs/method.md §6, as SalUn reports it)."""
    return [float(np.mean([abs(r[f] - ref[f]) for f in _GAP_FIELDS]))
            for r, ref in _paired_with_retrain(records, method, condensed, round_)]


def forgot_like_retrain(records: Sequence[dict], method: str, condensed: bool,
                        round_: int = 0) -> str:
    """``"k of n"``: the seeds on which ``method`` ends within 5 points of Retrain's forget
    accuracy (same seed and column); ``"–"`` for Retrain itself, the original, or no Retrain."""
    if method in ("retrain", "original"):
        return "–"
    pairs = _paired_with_retrain(records, method, condensed, round_)
    if not pairs:
        return "–"
    hits = sum(abs(r["forget_acc"] - ref["forget_acc"]) <= _FORGOT_TOLERANCE for r, ref in pairs)
    return f"{hits} of {len(pairs)}"


_HEADLINE = ("retrain", "cf", "a_cf")


def headline(records: Sequence[dict]) -> str:
    """A line each for Retrain, CF and A-CF (those the study ran): forget accuracy, test
    accuracy and time, without and with Blend, as means over seeds (the last round of a
    multi-round study, its time summed over the rounds)."""
    rounds = sorted({int(r.get("round", 0)) for r in records})
    last = rounds[-1]
    lines = []
    for m in _HEADLINE:
        parts = []
        for condensed in (False, True):
            rs = [r for r in records if r["method"] == m and bool(r["condensed"]) == condensed
                  and not r.get("variant")]
            fin = [r for r in rs if int(r.get("round", 0)) == last]
            if not fin:
                continue
            per_seed: dict = defaultdict(float)
            for r in rs:
                per_seed[r["seed"]] += float(r.get("total_s") or 0.0)
            mean = lambda f, rows=fin: float(np.mean([r[f] for r in rows]))  # noqa: E731
            forgot = forgot_like_retrain(records, m, condensed, last)
            parts.append(
                f"{'with' if condensed else 'without'} Blend, forget acc {mean('forget_acc'):.1f}%"
                + (f" (like Retrain on {forgot} seeds)" if forgot != "–" else "")
                + f", test acc {mean('test_acc'):.1f}%, "
                f"{float(np.mean(list(per_seed.values()))):.2f} s")
        if parts:
            lines.append(f"- **{m}**: " + "; ".join(parts) + ".")
    if not lines:
        return ""
    where = f"round {last}, time over all rounds" if len(rounds) > 1 else "time"
    return ("Headline (means over seeds; " + where + " = unlearning plus, with Blend, its "
            "stages):\n\n" + "\n".join(lines))


def results_table(records: Sequence[dict], round_: int | None = None) -> str:
    """Markdown tables, one per condensation setting (without, then with Blend), one row per
    method; with several rounds, one pair of tables per round."""
    groups = _group(records)
    rounds = sorted({k[2] for k in groups}) if round_ is None else [round_]
    methods = list(dict.fromkeys(r["method"] for r in records))
    cols = [("MIA score (paper's)", "mia"), ("MIA AUC (plain)", "mia_auc"),
            ("retain acc", "retain_acc"), ("forget acc", "forget_acc"),
            ("forgot like Retrain", "forgot"), ("test acc", "test_acc"),
            ("unlearn s", "unlearn_s"), ("total s", "total_s"), ("gap to Retrain", None),
            ("train size", "train_size")]
    lines = []
    for rnd in rounds:
        for condensed in (False, True):
            rows = []
            for m in methods:
                rs = groups.get((m, condensed, rnd), [])
                if not rs:
                    continue
                cells = []
                for _, field in cols:
                    if field is None:
                        cells.append(format_ci(average_gap(records, m, condensed, rnd))
                                     if m not in ("retrain", "original") else "–")
                    elif field == "forgot":
                        cells.append(forgot_like_retrain(records, m, condensed, rnd))
                    else:
                        digits = 0 if field == "train_size" else (3 if field.endswith("_s") else 2)
                        cells.append(format_ci([r.get(field) for r in rs], digits))
                rows.append(f"| {m} | " + " | ".join(cells) + f" | {len(rs)} |")
            if not rows:
                continue
            title = ("with Blend condensation (w DC)" if condensed
                     else "without condensation (w/o DC)")
            if len(rounds) > 1:
                title = f"Round {rnd}, {title}"
            lines += [f"\n### {title[0].upper()}{title[1:]}\n",
                      "| method | " + " | ".join(c for c, _ in cols) + " | seeds |",
                      "|---|" + "---|" * (len(cols) + 1), *rows]
    return "\n".join(lines)


_PAPER_COLS = (("MIA", "mia"), ("retain acc, trained set", "retain_acc_train_set"),
               ("forget acc", "forget_acc"), ("test acc", "test_acc"),
               ("unlearn s", "unlearn_s"))


def paper_table(records: Sequence[dict]) -> str:
    """The paper's numbers beside this study's means, for the paper's dataset and scenario
    (:mod:`experiments.paper`): each cell "paper / ours". Empty when the paper has none."""
    r0 = records[0]
    paper = paper_rows(str(r0.get("dataset")), str(r0.get("scenario")))
    if not paper:
        return ""
    groups = _group(records)
    lines = ["| method | DC | " + " | ".join(c for c, _ in _PAPER_COLS) + " |",
             "|---|---|" + "---|" * len(_PAPER_COLS)]
    for (method, condensed), values in paper.items():
        rs = groups.get((method, condensed, 0), [])
        cells = []
        for _, field in _PAPER_COLS:
            ours = [r.get(field) for r in rs if r.get(field) is not None]
            ours_s = f"{np.mean(ours):.{1 if field.endswith('_s') else 2}f}" if ours else "–"
            theirs = values.get(field)
            cells.append(f"{'–' if theirs is None else theirs} / {ours_s}")
        lines.append(f"| {method} | {'yes' if condensed else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def per_seed_table(records: Sequence[dict], round_: int = 0) -> str:
    """Every seed's outcome, one row per method and column (variants by their label): forget
    accuracy / test accuracy / MIA score of round ``round_``, so a mean that hides a split
    (forgets on one seed, not on the others) is visible."""
    rs = [r for r in records if int(r.get("round", 0)) == round_]
    seeds = sorted({r["seed"] for r in rs})
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in rs:
        label = f"{r['method']} [{r['variant']}]" if r.get("variant") else r["method"]
        groups[(label, bool(r["condensed"]))][r["seed"]] = r
    lines = ["| method | DC | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for (label, condensed), by_seed in groups.items():
        cells = [(f"{by_seed[s]['forget_acc']:.0f} / {by_seed[s]['test_acc']:.1f} / "
                  f"{by_seed[s]['mia']:.0f}") if s in by_seed else "–" for s in seeds]
        lines.append(f"| {label} | {'yes' if condensed else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stage_table(records: Sequence[dict]) -> str:
    rs = [r for r in records if r.get("condensed") and "blend_s" in r]
    if not rs:
        return ""
    seen = {}
    for r in rs:  # one row per (seed, round): every method of it shares the condensation
        seen[(r["seed"], r.get("round", 0))] = r
    fields = ("embed_s", "kmeans_s", "split_s", "blend_s", "condense_compile_s")
    rows = list(seen.values())
    out = ["| stage | " + " | ".join(fields) + " | reduced / real retain |",
           "|---|" + "---|" * (len(fields) + 1)]
    cells = [format_ci([r.get(f) for r in rows], 3) for f in fields]
    ratio = format_ci([r["train_size"] / max(r["retain_size"], 1) for r in rows
                       if r["method"] not in ("ssd",) and r["train_size"]], 3)
    out.append("| Blend (over seeds) | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def _has_variants(records: Sequence[dict]) -> bool:
    return any(r.get("variant") for r in records)


def rounds_table(records: Sequence[dict]) -> str:
    """Multi-round summary: per-round and summed end-to-end time, last round's metrics."""
    rounds = sorted({int(r.get("round", 0)) for r in records})
    last = rounds[-1]
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if m != "original"]
    head = ("| method | DC | " + " | ".join(f"total s round {k}" for k in rounds)
            + " | total s, all rounds | test acc, last | forget acc, last | MIA, last | seeds |")
    lines = [head, "|" + "---|" * (len(rounds) + 7)]
    for m in methods:
        for condensed in (False, True):
            rs = [r for r in records if r["method"] == m and bool(r["condensed"]) == condensed]
            if not rs:
                continue
            per_seed: dict[int, float] = defaultdict(float)
            for r in rs:
                per_seed[r["seed"]] += float(r.get("total_s") or 0.0)
            full = [per_seed[s] for s in per_seed   # seeds with every round finished
                    if {int(r.get("round", 0)) for r in rs if r["seed"] == s} == set(rounds)]
            fin = [r for r in rs if int(r.get("round", 0)) == last]
            cells = [format_ci([r.get("total_s") for r in rs if int(r.get("round", 0)) == k], 3)
                     for k in rounds]
            cells += [format_ci(full, 3)] + [format_ci([r.get(f) for r in fin])
                                             for f in ("test_acc", "forget_acc", "mia")]
            lines.append(f"| {m} | {'yes' if condensed else 'no'} | " + " | ".join(cells)
                         + f" | {len(full)} |")
    return "\n".join(lines)


def ablation_table(records: Sequence[dict]) -> str:
    """The retain-set ablation: one row per (method, variant), the original model first."""
    cols = [("MIA", "mia"), ("free retain acc", "free_acc"),
            ("residual retain acc", "residual_acc"), ("forget acc", "forget_acc"),
            ("test acc", "test_acc"), ("unlearn s", "unlearn_s"), ("total s", "total_s"),
            ("train size", "train_size")]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r.get("variant"))].append(r)
    keys = sorted(groups, key=lambda k: k[0] != "original")  # stable: run order otherwise
    lines = ["| method | retain set | " + " | ".join(c for c, _ in cols) + " | seeds |",
             "|" + "---|" * (len(cols) + 3)]
    for method, variant in keys:
        rs = groups[(method, variant)]
        desc = rs[0].get("variant_desc") or variant or "(before unlearning)"
        cells = [format_ci([r.get(f) for r in rs],
                           0 if f == "train_size" else (3 if f.endswith("_s") else 2))
                 for _, f in cols]
        lines.append(f"| {method} | {desc} | " + " | ".join(cells) + f" | {len(rs)} |")
    return "\n".join(lines)


def write_report(workdir: str, records: Sequence[dict]) -> str:
    """Write ``results.md`` and the plots into ``workdir``."""
    if not records:
        return ""
    r0 = records[0]
    seeds = sorted({r["seed"] for r in records})
    parts = [
        f"# {r0.get('study', 'study')}: {r0.get('dataset')} / {r0.get('model')}, "
        f"scenario {r0.get('scenario')}",
        "",
        headline(records),
        "",
        f"Cells: {INTERVAL_NOTE}; seeds {seeds}. Accuracies in percent. 'MIA score (paper's)' is "
        "the paper's membership score (50 = indistinguishable from unseen data; the reference's "
        "swap makes it jump at AUC 42, see the README), 'MIA AUC (plain)' the attack's ROC-AUC "
        "without the swap: rank methods by the plain AUC. 'forgot like Retrain': the seeds on "
        "which the forget accuracy ends within 5 points of Retrain's. Times in seconds of wall "
        "clock, device-synchronised, compile time excluded; 'total s' adds the Blend stages "
        "(embedding, k-means, split, blend) to the unlearning time; 'gap to Retrain' is the mean "
        "absolute difference to Retrain's forget/retain/test accuracy and MIA.",
        "",
        ablation_table(records) if _has_variants(records) else results_table(records),
        "",
    ]
    rounds = sorted({int(r.get("round", 0)) for r in records})
    if len(rounds) > 1:
        parts += ["## Over all rounds", "", rounds_table(records), ""]
    elif not _has_variants(records) and (paper := paper_table(records)):
        parts += [f"## Beside the paper: {PAPER_LABEL}", "",
                  f"Each cell: the paper's number / this run's mean over seeds {seeds} "
                  f"({r0.get('model')}, {r0.get('retain_size', '?')} retain images, this "
                  "machine). The paper's numbers are not this run's: its model, data size and GPU "
                  "differ unless this run is the paper's configuration on a GPU. Retain accuracy "
                  "is on the set each method trained on, as the paper measures it "
                  "(retain_acc_train_set; the tables above use the real retain set); the paper's "
                  "class-wise test accuracy includes the forgotten class, as ours does.", "",
                  paper, ""]
    last = rounds[-1]
    parts += ["## Every seed" + (f", round {last}" if len(rounds) > 1 else ""), "",
              "forget acc / test acc / MIA score of each seed's run (the rows above summarise "
              "them).", "", per_seed_table(records, last), ""]
    if not _has_variants(records):  # the ablation table carries each variant's own stages
        for rnd in rounds:
            stages = _stage_table([r for r in records if int(r.get("round", 0)) == rnd])
            if stages:
                title = "## Blend stages" + (f", round {rnd}" if len(rounds) > 1 else "")
                parts += [title, "", stages, ""]
    text = "\n".join(parts)
    atomic_write(os.path.join(workdir, "results.md"), text)
    plots.write_plots(workdir, records)
    return text
