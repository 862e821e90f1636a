"""The report's figures (PNG, matplotlib's Agg canvas; no pyplot state, no display needed).

``write_plots(workdir, records)`` is called by :func:`experiments.report.write_report` and writes,
from a study's records:

- ``tradeoff.png``: end-to-end time (unlearning + Blend stages, log scale) against test accuracy
  and against the MIA score, one colour per method, hollow without and filled with condensation
  (an arrow joins the two); error bars are 95% confidence intervals over seeds. Multi-round
  studies plot the time summed over rounds against the last round's metrics.
- ``loss_hist.png``: histograms of the per-example cross-entropy on the forget set and on unseen
  data (the MIA's negatives) before (the original model) and after each method; counts summed
  over seeds, from each record's ``loss_hist`` (see :func:`jaxunlearn.evaluate.loss_histogram`).
- ``rounds.png`` (multi-round studies): cumulative time, test and forget accuracy and MIA per
  round.

:func:`forgetting_curves_plot` draws ``experiments.forgetting_curves``'s figure: the metrics of
every evaluation during unlearning against seconds on a log axis, with Retrain's level as a band.

:func:`blend_grid` (and :func:`blend_grid_from_output` for a
:class:`jaxunlearn.condense.BlendOutput`) draws blended images next to their clusters' members;
the condensation code calls it when it has the images.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from experiments.io import atomic_write
from jaxunlearn.metrics import confidence_interval

__all__ = [
    "blend_grid",
    "blend_grid_from_output",
    "forgetting_curves_plot",
    "loss_hist_plot",
    "rounds_plot",
    "tradeoff_plot",
    "ulira_roc_plot",
    "write_plots",
]

_COND_NAME = {False: "w/o DC", True: "w DC"}


# ---------------------------------------------------------------------------------------------
# Figures: small helpers


def _figure(w: float, h: float, layout: str | None = None):
    fig = Figure(figsize=(w, h), dpi=110, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write(path, buf.getvalue())
    return path


def _label(r: dict) -> str:
    return f"{r['method']} [{r['variant']}]" if r.get("variant") else r["method"]


def _short_labels(records: Sequence[dict]) -> Callable[[str], str]:
    """Drop the method name from variant labels when every variant record shares it."""
    methods = {r["method"] for r in records if r.get("variant")}
    if len(methods) != 1:
        return lambda lab: lab
    prefix = f"{methods.pop()} ["
    return lambda lab: lab[len(prefix):-1] if lab.startswith(prefix) else lab


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean, half = confidence_interval(vals)
    return float(mean), (float(half) if len(vals) > 1 and np.isfinite(half) else 0.0)


def _last_round(records: Sequence[dict]) -> int:
    return max(int(r.get("round", 0)) for r in records)


def _per_seed_totals(records: Sequence[dict]) -> dict[tuple, dict[int, float]]:
    """(label, condensed) -> seed -> total time summed over rounds."""
    tot: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        tot[(_label(r), bool(r["condensed"]))][r["seed"]] += float(r.get("total_s") or 0.0)
    return tot


# ---------------------------------------------------------------------------------------------
# Figures


def tradeoff_plot(path: str, records: Sequence[dict]) -> str | None:
    """Time (log) vs test accuracy and vs MIA per method, w/o (hollow) and w (filled) DC."""
    rs = [r for r in records if r["method"] != "original"]
    if not rs:
        return None
    last = _last_round(rs)
    multi = last > 0
    totals = _per_seed_totals(rs)
    finals = defaultdict(list)
    for r in rs:
        if int(r.get("round", 0)) == last:
            finals[(_label(r), bool(r["condensed"]))].append(r)
    labels = list(dict.fromkeys(_label(r) for r in rs))
    short = _short_labels(rs)
    colours = _colours(len(labels))
    fig = _figure(12, 4.6)
    axes = fig.subplots(1, 2, gridspec_kw=dict(wspace=0.28))
    fields = (("test_acc", "test accuracy (%)"), ("mia", "MIA score (50 = ideal)"))
    for ax, (field, name) in zip(axes, fields, strict=True):
        for li, lab in enumerate(labels):
            pts = []
            for cond in (False, True):
                group = finals.get((lab, cond))
                if not group:
                    continue
                seeds = [r["seed"] for r in group]
                t, terr = _mean_ci([totals[(lab, cond)][s] for s in seeds])
                v, verr = _mean_ci([r.get(field) for r in group])
                if not (np.isfinite(t) and np.isfinite(v)) or t <= 0:
                    continue
                ax.errorbar(t, v, xerr=terr or None, yerr=verr or None, fmt="o", ms=8,
                            color=colours[li], mfc=colours[li] if cond else "white",
                            mew=1.6, capsize=2, lw=1, zorder=3)
                pts.append((t, v))
            if len(pts) == 2:
                ax.annotate("", xy=pts[1], xytext=pts[0], zorder=2,
                            arrowprops=dict(arrowstyle="->", color=colours[li], lw=1, alpha=0.7))
            if pts:
                ax.annotate(short(lab), pts[0], textcoords="offset points", xytext=(6, 5),
                            fontsize=8, color=colours[li])
        if field == "mia":
            ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.margins(x=0.2, y=0.08)  # room for the labels
        _clip_percent(ax)
        _log_axis(ax, "x")
        ax.set_xlabel(("time summed over rounds" if multi else "time") +
                      " (s, unlearning + Blend stages, log)")
        ax.set_ylabel(name + (f", round {last}" if multi else ""))
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], marker="o", ls="", color="k", mfc="white", label="w/o condensation"),
               Line2D([], [], marker="o", ls="", color="k", label="with Blend condensation")]
    axes[1].legend(handles=handles, loc="best", fontsize=8)
    fig.suptitle(_title(records) + ": time vs utility and privacy (mean ± 95% CI over seeds)",
                 fontsize=10)
    return _save(fig, path)


def loss_hist_plot(path: str, records: Sequence[dict]) -> str | None:
    """Forget vs unseen loss histograms before (original) and after each method (last round).

    Method studies: one row per method, columns w/o and w DC. Variant studies (ablations): one
    panel per variant, four to a row.
    """
    last = _last_round(records)
    rs = [r for r in records if int(r.get("round", 0)) == last and r.get("loss_hist")]
    if not rs:
        return None
    panels: dict[tuple, list[dict]] = defaultdict(list)
    for r in rs:
        panels[(_label(r), bool(r["condensed"]))].append(r)
    order = sorted(panels, key=lambda k: k[0] != "original")  # the "before" panel first
    if any(r.get("variant") for r in rs):
        ncols = min(4, len(order))
        slots = {k: divmod(i, ncols) for i, k in enumerate(order)}
    else:
        labels = list(dict.fromkeys(lab for lab, _ in order))
        conds = sorted({c for _, c in panels})
        ncols = len(conds)
        slots = {k: (labels.index(k[0]), conds.index(k[1])) for k in order}
    nrows = 1 + max(i for i, _ in slots.values())
    fig = _figure(4.0 * ncols, 2.1 * nrows + 0.5, layout="constrained")
    axes = np.array(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    short = _short_labels(rs)
    for key, (i, j) in slots.items():
        lab, cond = key
        group = panels[key]
        ax = axes[i, j]
        ax.axis("on")
        edges = np.asarray(group[0]["loss_hist"]["edges"], float)
        shown = edges.copy()
        shown[0] = edges[1] / 10  # the [0, 1e-4) bin, drawn on the log axis
        for name, colour in (("unseen", "tab:blue"), ("forget", "tab:red")):
            counts = np.sum([g["loss_hist"][name] for g in group], axis=0).astype(float)
            frac = counts / max(counts.sum(), 1.0)
            mean = _mean_ci([g["loss_hist"][name + "_mean"] for g in group])[0]
            ax.stairs(frac, shown, color=colour, fill=True, alpha=0.35,
                      label=f"{name} (mean {mean:.2f})")
        ax.set_xscale("log")
        mia = _mean_ci([g.get("mia") for g in group])[0]
        if lab == "original":
            name = "before unlearning (original)"
        elif short(lab) != lab:
            name = short(lab)
        else:
            name = f"{lab} {_COND_NAME[cond]}"
        ax.set_title(f"{name}: MIA {mia:.1f}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("per-example CE (log; leftmost bin ≤ 1e-4)", fontsize=7)
        ax.set_ylabel("fraction", fontsize=7)
    fig.suptitle(_title(records) + ": forget vs unseen losses" +
                 (f" (round {last})" if last else "") + ", summed over seeds", fontsize=10)
    return _save(fig, path)


def rounds_plot(path: str, records: Sequence[dict]) -> str | None:
    """Per-round curves of a multi-round study: cumulative time, accuracies, MIA."""
    rounds = sorted({int(r.get("round", 0)) for r in records})
    if len(rounds) < 2:
        return None
    rs = [r for r in records if r["method"] != "original"]
    labels = list(dict.fromkeys(_label(r) for r in rs))
    colours = _colours(len(labels))
    by = defaultdict(list)
    for r in rs:
        by[(_label(r), bool(r["condensed"]), int(r.get("round", 0)))].append(r)
    fig = _figure(12, 6.5, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    fields = (("total_s", "cumulative time (s, unlearning + Blend)"),
              ("test_acc", "test accuracy (%)"), ("forget_acc", "forget accuracy (%)"),
              ("mia", "MIA score (50 = ideal)"))
    for ax, (field, name) in zip(axes, fields, strict=True):
        for li, lab in enumerate(labels):
            for cond in (False, True):
                xs, ys, es = [], [], []
                cum: dict[int, float] = defaultdict(float)
                for rnd in rounds:
                    group = by.get((lab, cond, rnd))
                    if not group:
                        break
                    if field == "total_s":
                        for g in group:
                            cum[g["seed"]] += float(g.get("total_s") or 0.0)
                        m, e = _mean_ci([cum[g["seed"]] for g in group])
                    else:
                        m, e = _mean_ci([g.get(field) for g in group])
                    xs.append(rnd)
                    ys.append(m)
                    es.append(e)
                if xs:  # w/o and w DC side by side, not on top of each other
                    xs = np.asarray(xs, float) + (0.04 if cond else -0.04)
                    ax.errorbar(xs, ys, yerr=es, color=colours[li], ls="-" if cond else "--",
                                marker="o" if cond else "s", mfc=colours[li] if cond else "white",
                                capsize=2, label=f"{lab} {_COND_NAME[cond]}")
        ax.set_xticks(rounds)
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if field == "total_s":
            _log_axis(ax, "y")
        else:
            _clip_percent(ax)
        if field == "mia":
            ax.axhline(50, color="grey", lw=0.8, ls=":")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(_title(records) + ": multi-round forgetting (mean ± 95% CI over seeds)",
                 fontsize=10)
    return _save(fig, path)


def blend_grid(path: str, blended_x: Any, members_x_list: Sequence[Any], *,
               labels: Sequence[int] | None = None, weights_list: Sequence[Any] | None = None,
               max_members: int = 8, title: str | None = None) -> str:
    """Draw blended images next to the members of their clusters, one cluster per row.

    Args:
      path: the PNG to write.
      blended_x: ``[k, h, w, c]`` blended images (normalised pixels are fine: each row is
        rescaled to [0, 1] by its own min and max, so a blend and its members share a scale).
      members_x_list: ``k`` arrays ``[m_i, h, w, c]``, the images of each cluster.
      labels: optional ``k`` class labels (row titles).
      weights_list: optional ``k`` arrays ``[m_i]`` of normalised blend weights (captions).
      max_members: members shown per row (the heaviest first when weights are given).
      title: figure title.

    Returns:
      ``path``.
    """
    bx = np.asarray(blended_x, np.float32)
    if bx.ndim != 4 or len(members_x_list) != bx.shape[0]:
        raise ValueError(f"expected blended_x [k, h, w, c] and k member arrays; got {bx.shape} "
                         f"and {len(members_x_list)}")
    k = bx.shape[0]
    shown = []
    for s in range(k):
        mx = np.asarray(members_x_list[s], np.float32)
        w = None if weights_list is None else np.asarray(weights_list[s], np.float32)
        order = np.arange(len(mx)) if w is None else np.argsort(-w, kind="stable")
        order = order[:max_members]
        shown.append((mx[order], None if w is None else w[order], len(mx)))
    cols = 1 + max((len(m) for m, _, _ in shown), default=0)
    fig = _figure(1.15 * cols + 0.4, 1.6 * k + 0.6, layout="constrained")  # title hugs rows
    axes = np.array(fig.subplots(k, cols, squeeze=False))
    for s in range(k):
        mx, w, n = shown[s]
        row = np.concatenate([bx[s:s + 1], mx]) if len(mx) else bx[s:s + 1]
        lo, hi = float(row.min()), float(row.max())
        scale = (row - lo) / (hi - lo) if hi > lo else np.zeros_like(row)
        for j in range(cols):
            ax = axes[s, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(scale):
                ax.axis("off")
                continue
            img = scale[j]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img, 0, 1))
            if j == 0:
                lab = "" if labels is None else f"class {int(labels[s])}\n"
                ax.set_title(f"{lab}blend of {n}", fontsize=7, color="tab:red")
                for side in ax.spines.values():
                    side.set_color("tab:red")
                    side.set_linewidth(2)
            elif w is not None:
                ax.set_title(f"w {w[j - 1]:.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def blend_grid_from_output(path: str, x_train: Any, blend: Any, *, rows: int = 8,
                           seed: int = 0, max_members: int = 8, title: str | None = None) -> str:
    """:func:`blend_grid` of ``rows`` clusters (≥ 2 members, seeded pick) of a ``BlendOutput``.

    Args:
      path: the PNG to write.
      x_train: ``[n, h, w, c]`` the training images ``blend.member_idx`` indexes.
      blend: a :class:`jaxunlearn.condense.BlendOutput` (``images``, ``labels``, ``weights``,
        ``member_idx``).
    """
    idx = np.asarray(blend.member_idx)
    sizes = (idx >= 0).sum(1)
    pool = np.flatnonzero(sizes >= 2)
    if pool.size == 0:
        pool = np.arange(idx.shape[0])
    pick = np.sort(np.random.default_rng(seed).choice(pool, min(rows, pool.size), replace=False))
    x = np.asarray(x_train)
    members = [x[idx[s][idx[s] >= 0]] for s in pick]
    weights = [np.asarray(blend.weights)[s][idx[s] >= 0] for s in pick]
    return blend_grid(path, np.asarray(blend.images)[pick], members,
                      labels=np.asarray(blend.labels)[pick], weights_list=weights,
                      max_members=max_members, title=title)


def forgetting_curves_plot(path: str, series: dict[tuple[str, bool], list[list[dict]]],
                           target: dict[str, float], *, tolerance: float,
                           title: str = "forgetting curves") -> str | None:
    """Forget accuracy, test accuracy on the retained classes and MIA AUC against seconds (log).

    Args:
      path: the PNG to write.
      series: ``(method, condensed) -> one list of evaluations per seed`` (dicts with
        ``unlearn_s``, ``blend_stages_s`` and the three metrics); with Blend the time axis adds
        the Blend stages. A budget-tied method's evaluations (one per budget) get markers.
      target: the seed-mean of Retrain's three metrics (without Blend): drawn as a band of
        ± ``tolerance`` (each seed is judged against its own Retrain; the band is a guide).
    """
    if not series:
        return None
    fields = (("forget_acc", "forget accuracy (%)"),
              ("test_retained_acc", "test accuracy, retained classes (%)"),
              ("mia_auc", "MIA AUC (plain)"))
    columns = sorted({c for _, c in series})
    methods = list(dict.fromkeys(m for m, _ in series))
    colours = dict(zip(methods, _colours(len(methods)), strict=True))
    fig = _figure(14, 3.9 * len(columns))
    axes = np.atleast_2d(fig.subplots(len(columns), 3, gridspec_kw=dict(wspace=0.25,
                                                                        hspace=0.35)))
    # the first evaluation (the model before any step) sits at the preparation time, often
    # below a millisecond: drawn at the left edge, half the earliest time after a step
    after = [p["unlearn_s"] + (p.get("blend_stages_s") or 0.0) for per_seed in series.values()
             for pts in per_seed for p in pts if p.get("step")]
    left = 0.5 * min(after) if after else 1e-3
    for row, cond in enumerate(columns):
        for ax, (field, name) in zip(axes[row], fields, strict=True):
            if field in target:
                lo, hi = target[field] - tolerance, target[field] + tolerance
                if field == "forget_acc":
                    lo = -1.0
                elif field == "test_retained_acc":
                    hi = 101.0
                ax.axhspan(lo, hi, color="grey", alpha=0.15, lw=0)
            for (method, c), per_seed in series.items():
                if c != cond:
                    continue
                for pts in per_seed:
                    t = [max(p["unlearn_s"] + (p.get("blend_stages_s") or 0.0), left)
                         for p in pts]
                    v = [p[field] for p in pts]
                    keep = [i for i, x in enumerate(t) if x > 0 and v[i] is not None]
                    ax.plot([t[i] for i in keep], [v[i] for i in keep], color=colours[method],
                            lw=1.0, alpha=0.55, marker="o" if len(pts) <= 5 else None, ms=3.5)
            _log_axis(ax, "x")
            ax.set_xlim(left=left)
            _clip_percent(ax)
            ax.set_ylabel(name, fontsize=9)
            ax.set_xlabel("seconds" + (" (unlearning + Blend stages)" if cond else
                                       " (unlearning)") + ", log", fontsize=9)
            ax.set_title("with Blend" if cond else "without Blend", fontsize=9)
            ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colours[m], label=m) for m in methods]
    handles.append(Line2D([], [], color="grey", alpha=0.4, lw=6,
                          label=f"Retrain level (seed mean ± {tolerance:g})"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8,
               bbox_to_anchor=(0.5, 0.965), frameon=False)
    fig.suptitle(title + ": one line per seed (budget-tied methods: one dot per budget)",
                 fontsize=10, y=1.0)
    return _save(fig, path)


def ulira_roc_plot(path: str, curves: dict[str, tuple[Any, Any, float]], *,
                   title: str = "U-LiRA ROC") -> str | None:
    """ROC curves of the U-LiRA attack, one per row of the audit, on log-log axes.

    Args:
      path: the PNG to write.
      curves: ``label -> (fpr, tpr, auc)`` (fractions; e.g. ``"cf +DC"``). Rows with Blend are
        dashed, the chance diagonal is grey; the low-FPR corner (1% and 0.1%) is where an
        attack's power shows.
    """
    if not curves:
        return None
    fig = _figure(11, 5)
    axes = fig.subplots(1, 2, gridspec_kw=dict(wspace=0.25))
    base = list(dict.fromkeys(label.replace(" +DC", "") for label in curves))
    colours = dict(zip(base, _colours(len(base)), strict=True))
    colours["original"] = "black"  # the positive control, drawn over the methods it resembles
    for ax, logscale in zip(axes, (True, False), strict=True):
        floor = 1e-4
        ax.plot([floor, 1], [floor, 1], color="grey", lw=0.8, ls=":")
        for label, (fpr, tpr, auc) in curves.items():
            fpr, tpr = np.asarray(fpr), np.asarray(tpr)
            keep = fpr > 0 if logscale else slice(None)
            ax.plot(fpr[keep], np.maximum(tpr[keep], floor) if logscale else tpr[keep],
                    color=colours[label.replace(" +DC", "")],
                    ls="--" if label.endswith("+DC") else "-", lw=1.2,
                    zorder=3 if label == "original" else 2,
                    label=f"{label} (AUC {100 * auc:.1f})")
        if logscale:
            _log_axis(ax, "x")
            _log_axis(ax, "y")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1.02)
            for alpha in (1e-2, 1e-3):
                ax.axvline(alpha, color="grey", lw=0.6, alpha=0.5)
        ax.set_xlabel("false-positive rate (retrained called unlearned)" +
                      (", log" if logscale else ""), fontsize=9)
        ax.set_ylabel("true-positive rate" + (", log" if logscale else ""), fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="lower right", frameon=False)
    fig.suptitle(title + ": unlearned vs retrained target models, every (model, example) pair "
                 "(dashed: with Blend)", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------


def _clip_percent(ax) -> None:
    """Keep a percent axis within [0, 100] (wide CIs of few seeds would stretch it)."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -1.0), min(hi, 101.0))


def _log_axis(ax, which: str) -> None:
    """Log scale with plain-number labels at 1, 2, 5 × 10^k (no crowded minor labels)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _colours(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _title(records: Sequence[dict]) -> str:
    r0 = records[0]
    return f"{r0.get('study', 'study')} ({r0.get('dataset')}, {r0.get('model')})"


def write_plots(workdir: str, records: Sequence[dict]) -> list[str]:
    """Write every figure that ``records`` support into ``workdir``; return their paths."""
    if not records:
        return []
    out = []
    for name, fn in (("tradeoff.png", tradeoff_plot), ("loss_hist.png", loss_hist_plot),
                     ("rounds.png", rounds_plot)):
        p = fn(os.path.join(workdir, name), records)
        if p:
            out.append(p)
    return out
