"""Two runs of one study side by side: the mean over seeds of each field, old → new.

    python -m experiments.compare runs/old/class_forget runs/new/class_forget
    python -m experiments.compare OLD NEW --fields mia,forget_acc,train_size --out diff.md

Rows are keyed by method, condensation, ablation variant and round (the dc_compare study: method
and ipc); a row present in one run only is listed with "–" on the other side. Wall-clock fields
(``*_s``) are left out unless named with ``--fields``: they move from run to run and are
compared only by the benchmarks, side by side in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from experiments.io import atomic_write, load_records

__all__ = ["DEFAULT_FIELDS", "compare_records", "main"]

DEFAULT_FIELDS = ("mia", "mia_auc", "forget_acc", "retain_acc", "test_acc", "train_size")


def _row_key(r: dict) -> tuple:
    if "condensed" not in r and "ipc" in r:  # dc_compare
        return (r["method"], f"ipc {r['ipc']}")
    return (r["method"], "DC" if r.get("condensed") else "–", r.get("variant") or "",
            f"round {r.get('round', 0)}")


def _means(records: Sequence[dict], fields: Sequence[str]) -> dict[tuple, dict[str, float]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_row_key(r)].append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {"n": len(rs)}
        for f in fields:
            vals = [r[f] for r in rs if isinstance(r.get(f), int | float)
                    and not isinstance(r.get(f), bool)]
            out[key][f] = float(np.mean(vals)) if vals else None
    return out


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def compare_records(old: Sequence[dict], new: Sequence[dict],
                    fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """A markdown table: one row per key, ``old → new`` per field (means over seeds)."""
    a, b = _means(old, fields), _means(new, fields)
    keys = list(dict.fromkeys([*a, *b]))
    present = [f for f in fields if any(m.get(f) is not None for m in (*a.values(), *b.values()))]
    width = max(len(k) for k in keys) if keys else 1
    head = ["method", "DC", "variant", "round"][:width] if width > 2 else ["method", "ipc"]
    lines = ["| " + " | ".join(head + ["seeds"] + [f"{f} old → new" for f in present]) + " |",
             "|" + "---|" * (len(head) + 1 + len(present))]
    for k in keys:
        x, y = a.get(k, {}), b.get(k, {})
        cells = [f"{_fmt(x.get(f))} → {_fmt(y.get(f))}" for f in present]
        seeds = f"{x.get('n', 0)} / {y.get('n', 0)}"
        lines.append("| " + " | ".join([*map(str, k), seeds, *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="workdir (or records.jsonl) of the first run")
    p.add_argument("new", help="workdir (or records.jsonl) of the second run")
    p.add_argument("--fields", default=",".join(DEFAULT_FIELDS),
                   help="comma-separated record fields (default: %(default)s)")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    runs = []
    for path in (args.old, args.new):
        rec = os.path.join(path, "records.jsonl") if os.path.isdir(path) else path
        if not os.path.exists(rec):
            print(f"error: no records at {rec!r}", file=sys.stderr)
            return 2
        try:
            runs.append(load_records(rec))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    table = compare_records(*runs, fields=[f for f in args.fields.split(",") if f])
    print(table)
    if args.out:
        atomic_write(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
