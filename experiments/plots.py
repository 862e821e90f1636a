"""The report's figures (PNG, matplotlib's Agg canvas; no pyplot state, no display needed).

``write_plots(workdir, records)`` is called by :func:`experiments.report.write_report` and writes,
from a study's records:

- ``tradeoff.png``: end-to-end time (unlearning + Blend stages, log scale) against test accuracy
  (top row) and against the MIA score (bottom row), one panel per column (without, with Blend),
  one labelled dot per method at its seed mean, with each seed as a small dot and the min-max
  range over seeds as thin lines (never a t-interval, which a few bimodal seeds would stretch
  past 0 or 100); labels are placed where they hide no other label or dot. Multi-round studies
  plot the time summed over rounds against the last round's metrics.
- ``loss_hist.png``: histograms of the per-example cross-entropy on the forget set and on unseen
  data (the MIA's negatives) before (the original model) and after each method, one row per
  seed in every panel (never pooled over seeds: each model's own distributions), from each
  record's ``loss_hist`` (see :func:`jaxunlearn.evaluate.loss_histogram`), with that model's
  MIA score.
- ``rounds.png`` (multi-round studies): cumulative time, test and forget accuracy and MIA per
  round, a row per column (without, with Blend), lines through the seed means and min-max bands.

Percent axes never leave [0, 100]. ``tradeoff_figure``, ``loss_hist_figure`` and
``rounds_figure`` return the unsaved figures (for tests or further editing).

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
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from experiments.io import atomic_write

__all__ = [
    "blend_grid",
    "blend_grid_from_output",
    "forgetting_curves_plot",
    "loss_hist_figure",
    "loss_hist_plot",
    "rounds_figure",
    "rounds_plot",
    "tradeoff_figure",
    "tradeoff_plot",
    "ulira_roc_plot",
    "write_plots",
]

_COND_NAME = {False: "without Blend", True: "with Blend"}


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


def _finite(values: Any) -> np.ndarray:
    vals = np.asarray([np.nan if v is None else float(v) for v in values], float)
    return vals[np.isfinite(vals)]


def _last_round(records: Sequence[dict]) -> int:
    return max(int(r.get("round", 0)) for r in records)


def _per_seed_totals(records: Sequence[dict]) -> dict[tuple, dict[int, float]]:
    """(label, condensed) -> seed -> total time summed over rounds."""
    tot: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        tot[(_label(r), bool(r["condensed"]))][r["seed"]] += float(r.get("total_s") or 0.0)
    return tot


def _percent_limits(values: Any, pad: float = 0.06) -> tuple[float, float]:
    """Y-limits around ``values`` (percent), padded, never beyond [0, 100]."""
    vals = _finite(values)
    if not vals.size:
        return 0.0, 100.0
    lo, hi = float(vals.min()), float(vals.max())
    margin = max(pad * (hi - lo), 1.0)
    return max(lo - margin, 0.0), min(hi + margin, 100.0)


def _log_limits(values: Any, pad: float = 0.08) -> tuple[float, float]:
    """Log-axis limits around the positive ``values``, padded by a fraction of their decades."""
    vals = _finite(values)
    vals = vals[vals > 0]
    if not vals.size:
        return 0.1, 10.0
    lo, hi = float(vals.min()), float(vals.max())
    factor = 10 ** (pad * max(np.log10(hi / lo), 1.0))
    return lo / factor, hi * factor


# ---------------------------------------------------------------------------------------------
# Figures


_METRIC_NAME = {
    "test_acc": "test accuracy (%)",
    "forget_acc": "forget accuracy (%)",
    "retain_acc": "retain accuracy (%)",
    "test_retained_acc": "test accuracy, retained classes (%)",
    "mia": "MIA score (%, 50 = ideal)",
}
_COLUMN_TITLE = {False: "without Blend (real images)",
                 True: "with Blend (condensed images; time includes the Blend stages)"}


def tradeoff_figure(records: Sequence[dict], *,
                    fields: Sequence[str] = ("test_acc", "mia")) -> Figure | None:
    """The trade-off figure of :func:`tradeoff_plot`, not yet saved (``None`` without methods).

    Args:
      records: a study's records (``method``, ``condensed``, ``seed``, ``total_s``, the fields;
        optional ``variant`` and ``round``).
      fields: one row of panels per record field, each a percent metric (``test_acc``,
        ``forget_acc``, ``retain_acc``, ``test_retained_acc``, ``mia``).

    Returns:
      A figure with ``len(fields)`` rows and one column per condensation column present
      (without, with Blend); each panel holds one labelled dot per method.
    """
    rs = [r for r in records if r["method"] != "original"]
    if not rs:
        return None
    last = _last_round(rs)
    totals = _per_seed_totals(rs)
    groups: dict[tuple, list[tuple[float, dict]]] = defaultdict(list)
    for r in rs:
        if int(r.get("round", 0)) == last:
            key = (_label(r), bool(r["condensed"]))
            groups[key].append((totals[key][r["seed"]], r))
    labels = list(dict.fromkeys(lab for lab, _ in groups))
    conds = sorted({c for _, c in groups})
    colours = dict(zip(labels, _colours(len(labels)), strict=True))
    markers = dict(zip(labels, _markers(len(labels)), strict=True))
    short = _short_labels(rs)
    n_seeds = max(len(g) for g in groups.values())
    w, h = 6.4 * len(conds) + 0.9, 3.8 * len(fields) + 1.6
    fig = _figure(w, h)
    axes = fig.subplots(len(fields), len(conds), squeeze=False, sharex=True, sharey="row")
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.15 / w, bottom=0.65 / h, top=1 - 0.95 / h,
                        wspace=0.07, hspace=0.12)
    ref_label = "retrain" if ("retrain", False) in groups else None
    pending = {}  # panel -> its labels, placed once every limit is final
    for row, field in enumerate(fields):
        row_vals = [r.get(field) for g in groups.values() for _, r in g]
        ref = None
        if ref_label:
            ref_vals = _finite([r.get(field) for _, r in groups[(ref_label, False)]])
            ref = float(ref_vals.mean()) if ref_vals.size else None
        axes[row, 0].set_ylim(*_percent_limits(row_vals + ([50.0] if field == "mia" else [])))
        for col, cond in enumerate(conds):
            ax = axes[row, col]
            items = []
            for lab in labels:
                pts = [(t, r.get(field)) for t, r in groups.get((lab, cond), [])]
                pts = np.asarray([(t, v) for t, v in pts if t > 0 and v is not None
                                  and np.isfinite(v)], float).reshape(-1, 2)
                if not len(pts):
                    continue
                ts, vs = pts[:, 0], pts[:, 1]
                tm, vm, c = float(ts.mean()), float(vs.mean()), colours[lab]
                if len(pts) > 1:  # min-max over seeds, then each seed
                    ax.plot([ts.min(), ts.max()], [vm, vm], color=c, lw=1, alpha=0.5, zorder=2)
                    ax.plot([tm, tm], [vs.min(), vs.max()], color=c, lw=1, alpha=0.5, zorder=2)
                    ax.plot(ts, vs, ls="", marker="o", ms=3, color=c, alpha=0.6, zorder=3,
                            clip_on=False)
                ax.plot([tm], [vm], ls="", marker=markers[lab], ms=7.5, color=c, mec="white",
                        mew=0.8, zorder=4, clip_on=False)
                items.append((short(lab), (tm, vm), c, pts))
            if ref is not None:
                ax.axhline(ref, color="black", ls="--", lw=0.8, alpha=0.6, zorder=1)
            if field == "mia":
                ax.axhline(50, color="grey", ls=":", lw=1, zorder=1)
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=8)
            pending[ax] = items
            if row == 0:
                ax.set_title(_COLUMN_TITLE[cond], fontsize=9)
            if col == 0:
                ax.set_ylabel(_METRIC_NAME.get(field, field) +
                              (f", after round {last}" if last else ""), fontsize=9)
            if row == len(fields) - 1:
                ax.set_xlabel(("time summed over rounds" if last else "time") +
                              " (s, log; unlearning + Blend stages)", fontsize=9)
    times = [t for g in groups.values() for t, _ in g]
    axes[0, 0].set_xlim(*_log_limits(times))
    for ax in axes.ravel():
        _log_axis(ax, "x")
    for ax, items in pending.items():
        _place_labels(ax, items)
    handles = [Line2D([], [], ls="", marker="o", ms=7.5, color="dimgrey", mec="white",
                      label=f"mean over {n_seeds} seeds" if n_seeds > 1 else "one seed")]
    if n_seeds > 1:
        handles += [Line2D([], [], ls="", marker="o", ms=3, color="dimgrey", label="one seed"),
                    Line2D([], [], color="dimgrey", lw=1, label="min–max over seeds")]
    if ref_label:
        handles.append(Line2D([], [], color="black", ls="--", lw=0.8,
                              label="Retrain without Blend (mean)"))
    if "mia" in fields:
        handles.append(Line2D([], [], color="grey", ls=":", lw=1, label="MIA 50 = ideal"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.38 / h),
               ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(_title(records) + ": time against " +
                 " and ".join(_METRIC_NAME.get(f, f).split(" (")[0] for f in fields) +
                 ", one dot per method", fontsize=10, y=1 - 0.08 / h)
    return fig


def tradeoff_plot(path: str, records: Sequence[dict], *,
                  fields: Sequence[str] = ("test_acc", "mia")) -> str | None:
    """Write :func:`tradeoff_figure` to ``path``; ``None`` when there is nothing to draw."""
    fig = tradeoff_figure(records, fields=fields)
    return None if fig is None else _save(fig, path)


def loss_hist_figure(records: Sequence[dict]) -> Figure | None:
    """The loss-histogram figure of :func:`loss_hist_plot`, not yet saved.

    Method studies: one row per method, columns without and with Blend. Variant studies
    (ablations): one panel per variant, four to a row. Each panel has one row per seed (never
    pooled), the forget set's and unseen data's histograms (fractions of the set per loss bin, a
    filled outline each) and that model's MIA score.
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
    free = [(i, j) for i in range(nrows) for j in range(ncols) if (i, j) not in slots.values()]
    fig = _figure(4.3 * ncols, 2.0 * nrows + (0.5 if free else 0.9), layout="constrained")
    axes = np.array(fig.subplots(nrows, ncols, squeeze=False, sharex=True))
    for ax in axes.ravel():
        ax.axis("off")
    short = _short_labels(rs)
    n_seeds = max(len(g) for g in panels.values())
    sets = (("unseen", "tab:blue", "unseen data (the MIA's negatives)"),
            ("forget", "tab:red", "forget set"))
    for key, (i, j) in slots.items():
        lab, cond = key
        group = sorted(panels[key], key=lambda g: g["seed"])
        ax = axes[i, j]
        ax.axis("on")
        edges = np.asarray(group[0]["loss_hist"]["edges"], float)
        shown = edges.copy()
        shown[0] = edges[1] ** 2 / edges[2]  # the [0, 1e-4) bin, as wide as the next (log)
        fracs = {(k, name): np.asarray(g["loss_hist"][name], float)
                 for k, g in enumerate(group) for name, _, _ in sets}
        fracs = {kn: c / max(c.sum(), 1.0) for kn, c in fracs.items()}
        peak = max(max(float(f.max()) for f in fracs.values()), 1e-9)
        for k, g in enumerate(group):  # one ridge per seed, top to bottom, never pooled
            base = len(group) - 1 - k
            for name, colour, _ in sets:
                ax.stairs(base + 0.9 * fracs[(k, name)] / peak, shown, baseline=base,
                          fill=True, color=colour, alpha=0.35, lw=0)
                ax.stairs(base + 0.9 * fracs[(k, name)] / peak, shown, baseline=None,
                          color=colour, lw=0.9)
            mia = g.get("mia")
            if mia is not None and np.isfinite(mia):
                ax.text(0.995, (base + 0.55) / len(group), f"MIA {mia:.0f}", fontsize=7,
                        ha="right", va="center", transform=ax.transAxes,
                        bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none", alpha=0.8))
        ax.set_xscale("log")
        ax.set_ylim(0, len(group))
        ax.set_yticks(np.arange(len(group)) + 0.4,
                      [f"seed {g['seed']}" for g in reversed(group)], fontsize=7)
        for y in range(1, len(group)):
            ax.axhline(y, color="grey", lw=0.5)
        if lab == "original":
            name = "before unlearning (original)"
        elif short(lab) != lab:
            name = short(lab)
        else:
            name = f"{lab} {_COND_NAME[cond]}"
        if group[0].get("variant_desc"):
            name += f": {group[0]['variant_desc']}"
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7, labelbottom=True)
        ax.set_xlabel("per-example cross-entropy (log; leftmost bin < 1e-4)", fontsize=7)
        ax.grid(alpha=0.25, axis="x")
    handles = [Patch(facecolor=colour, edgecolor=colour, alpha=0.5, label=text)
               for _, colour, text in sets]
    note = (("one row per seed" if n_seeds > 1 else "one seed") +
            "; height: fraction of the set per bin (one scale per panel)"
            "; MIA score of that model at the right (50 = ideal)")
    if free:
        i, j = free[0]
        axes[i, j].legend(handles=handles, loc="center", fontsize=9, frameon=False,
                          title=note.replace("; ", "\n"), title_fontsize=8)
    else:
        fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8,
                   frameon=False, title=note, title_fontsize=8)
    fig.suptitle(_title(records) + ": per-example losses on the forget set and on unseen data" +
                 (f" after round {last}" if last else ""), fontsize=10)
    return fig


def loss_hist_plot(path: str, records: Sequence[dict]) -> str | None:
    """Write :func:`loss_hist_figure` to ``path``; ``None`` without loss histograms."""
    fig = loss_hist_figure(records)
    return None if fig is None else _save(fig, path)


def rounds_figure(records: Sequence[dict]) -> Figure | None:
    """The per-round figure of :func:`rounds_plot`, not yet saved (``None`` for one round).

    One row per condensation column (without, with Blend), one column per metric (cumulative
    time, test accuracy, forget accuracy, MIA); a line per method through the seed means, with
    the min-max band over seeds.
    """
    rounds = sorted({int(r.get("round", 0)) for r in records})
    if len(rounds) < 2:
        return None
    rs = [r for r in records if r["method"] != "original"]
    if not rs:
        return None
    labels = list(dict.fromkeys(_label(r) for r in rs))
    colours = dict(zip(labels, _colours(len(labels)), strict=True))
    markers = dict(zip(labels, _markers(len(labels)), strict=True))
    short = _short_labels(rs)
    conds = sorted({bool(r["condensed"]) for r in rs})
    by = defaultdict(list)
    for r in rs:
        by[(_label(r), bool(r["condensed"]), int(r.get("round", 0)))].append(r)
    fields = (("total_s", "cumulative time (s, log; unlearning + Blend)"),
              ("test_acc", _METRIC_NAME["test_acc"]), ("forget_acc", _METRIC_NAME["forget_acc"]),
              ("mia", _METRIC_NAME["mia"]))
    fig = _figure(17, 3.3 * len(conds) + 0.8, layout="constrained")
    axes = fig.subplots(len(conds), len(fields), squeeze=False, sharex=True, sharey="col")
    n_seeds = 1
    for row, cond in enumerate(conds):
        for col, (field, name) in enumerate(fields):
            ax = axes[row, col]
            for lab in labels:
                xs, lo, mid, hi = [], [], [], []
                cum: dict[int, float] = defaultdict(float)
                for rnd in rounds:
                    group = by.get((lab, cond, rnd))
                    if not group:
                        break
                    if field == "total_s":
                        for g in group:
                            cum[g["seed"]] += float(g.get("total_s") or 0.0)
                        vals = _finite([cum[g["seed"]] for g in group])
                    else:
                        vals = _finite([g.get(field) for g in group])
                    if not vals.size:
                        break
                    n_seeds = max(n_seeds, vals.size)
                    xs.append(rnd)
                    lo.append(vals.min())
                    mid.append(vals.mean())
                    hi.append(vals.max())
                if not xs:
                    continue
                ax.plot(xs, mid, color=colours[lab], marker=markers[lab], ms=4, lw=1.2,
                        clip_on=False)
                if max(np.subtract(hi, lo)) > 0:
                    ax.fill_between(xs, lo, hi, color=colours[lab], alpha=0.12, lw=0)
            ax.set_xticks(rounds)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            if field == "mia":
                ax.axhline(50, color="grey", ls=":", lw=1)
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(_COLUMN_TITLE[cond].split(" (")[0], fontsize=9)
            if row == len(conds) - 1:
                ax.set_xlabel("round", fontsize=9)
    for col, (field, _) in enumerate(fields):
        if field == "total_s":
            _log_axis(axes[0, col], "y")
        else:
            vals = [line.get_ydata() for ax in axes[:, col] for line in ax.get_lines()]
            vals += [c.get_paths()[0].vertices[:, 1] for ax in axes[:, col]
                     for c in ax.collections if c.get_paths()]
            axes[0, col].set_ylim(*_percent_limits(np.concatenate(vals) if vals else []))
    handles = [Line2D([], [], color=colours[lab], marker=markers[lab], ms=4, lw=1.2,
                      label=short(lab)) for lab in labels]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False,
               title="method", title_fontsize=8)
    band = f"; band: min–max over {n_seeds} seeds" if n_seeds > 1 else ""
    fig.suptitle(_title(records) + ": multi-round forgetting, line through the seed means" +
                 band, fontsize=10)
    return fig


def rounds_plot(path: str, records: Sequence[dict]) -> str | None:
    """Write :func:`rounds_figure` to ``path``; ``None`` for a single-round study."""
    fig = rounds_figure(records)
    return None if fig is None else _save(fig, path)


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
                            lw=1.0, alpha=0.55, marker="o" if len(pts) <= 5 else None, ms=3.5,
                            clip_on=False)  # a curve at 0% or 100% stays visible
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


def _place_labels(ax, items: Sequence[tuple], fontsize: float = 8) -> None:
    """Write each item's label next to its point, where it hides no other label or dot.

    Greedy, the most crowded points first: each label takes, among 8 directions at growing
    distances (pixels of the figure's final layout), the place that least overlaps the labels
    already placed and every dot (heavily), the min-max lines (lightly) and the outside of the
    panel, nearer places winning ties; a label set away from its point gets a thin leader line.
    ``items``: ``(text, (x, y), colour, [n, 2] per-seed points)``.
    """
    if not items:
        return
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    panel = (box.x0, box.y0, box.x1, box.y1)
    to_px = ax.transData.transform
    centres = [to_px(xy) for _, xy, _, _ in items]
    dots = [(*to_px(xy), 6.0) for _, xy, _, _ in items]  # (x, y, half size) in pixels
    dots += [(*to_px(p), 2.5) for *_, pts in items for p in pts]
    solid = [(x - s, y - s, x + s, y + s) for x, y, s in dots]
    lines = []
    for (*_, pts), (cx, cy) in zip(items, centres, strict=True):
        if len(pts) > 1:
            (x0, y0), (x1, y1) = to_px(pts.min(0)), to_px(pts.max(0))
            lines += [(x0, cy - 1.5, x1, cy + 1.5), (cx - 1.5, y0, cx + 1.5, y1)]
    crowd = [sum(np.hypot(*(c - d)) < 60 for d in centres) for c in centres]
    directions = [(1, 1), (1, 0), (1, -1), (0, 1), (0, -1), (-1, 1), (-1, 0), (-1, -1)]
    for k in sorted(range(len(items)), key=lambda i: -crowd[i]):
        text, xy, colour, _ = items[k]
        px, py = centres[k]
        probe = ax.text(0, 0, text, fontsize=fontsize)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2, ext.height + 2
        best = None
        for radius in (7, 12, 20, 30, 42, 56, 72, 90, 110, 135):
            for ux, uy in directions:
                norm = np.hypot(ux, uy)
                dx, dy = radius * ux / norm, radius * uy / norm
                x0 = px + dx - (0 if ux > 0 else w if ux < 0 else w / 2)
                y0 = py + dy - (0 if uy > 0 else h if uy < 0 else h / 2)
                cand = (x0, y0, x0 + w, y0 + h)
                cost = (10 * sum(_overlap(cand, o) for o in solid)
                        + 0.5 * sum(_overlap(cand, o) for o in lines)
                        + 50 * (w * h - _overlap(cand, panel)) + 2 * radius)
                if best is None or cost < best[0]:
                    best = (cost, radius, dx, dy, ux, uy, cand)
        _, radius, dx, dy, ux, uy, cand = best
        solid.append(cand)
        arrow = dict(arrowstyle="-", color=colour, lw=0.6, alpha=0.7, shrinkA=0, shrinkB=4)
        ink = tuple(0.75 * np.asarray(to_rgb(colour)))  # darker than the dot, for reading
        ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset pixels", fontsize=fontsize,
                    color=ink, bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none",
                                         alpha=0.75),
                    ha="left" if ux > 0 else "right" if ux < 0 else "center",
                    va="bottom" if uy > 0 else "top" if uy < 0 else "center", zorder=5,
                    arrowprops=arrow if radius >= 20 else None)


def _overlap(a: tuple, b: tuple) -> float:
    """Area shared by two boxes ``(x0, y0, x1, y1)``."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _clip_percent(ax) -> None:
    """Keep a percent axis within [0, 100] (the y-limits never leave the metric's range)."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 100.0))


def _log_axis(ax, which: str) -> None:
    """Log scale with plain-number labels: every 1..9 × 10^k within a decade, 1, 2, 5 × 10^k
    over a few, 10^k only over more (decided when drawn, so after any later ``set_xlim``)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis

    def label(v: float, _) -> str:
        lo, hi = sorted(axis.get_view_interval())
        decades = np.log10(hi / lo) if lo > 0 else np.inf
        mantissa = round(v / 10 ** np.floor(np.log10(v) + 1e-9), 6)
        shown = {1.0} if decades > 2.5 else {1.0, 2.0, 5.0} if decades > 1.2 else None
        return f"{v:g}" if shown is None or mantissa in shown else ""

    axis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(NullFormatter())


def _colours(n: int) -> list:
    """``n`` colours: tab10's, then ten darker ones unlike them (none pale, for text too)."""
    tab10 = colormaps["tab10"]
    more = ["#393b79", "#637939", "#b8860b", "#7b4173", "#008080", "#800000", "#4b0082",
            "#556b2f", "#c71585", "#2f4f4f"]
    return [tab10(i) if i < 10 else more[(i - 10) % 10] for i in range(n)]


def _markers(n: int) -> list[str]:
    """``n`` markers that change with each round of 10 colours (tell tab20's pairs apart)."""
    return [("o", "s", "^", "D")[(i // 10) % 4] for i in range(n)]


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
