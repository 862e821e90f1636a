"""Tests of experiments.compare: two runs' records side by side."""

import json

from experiments.compare import compare_records, main


def _rec(method, condensed, seed, mia, **kw):
    return {"method": method, "condensed": condensed, "seed": seed, "mia": mia,
            "forget_acc": 100.0, "unlearn_s": 1.0 + seed, **kw}


def test_means_over_seeds_old_beside_new_and_rows_of_one_side():
    old = [_rec("cf", False, 0, 50.0), _rec("cf", False, 1, 60.0), _rec("cf", True, 0, 70.0)]
    new = [_rec("cf", False, 0, 52.0), _rec("cf", False, 1, 62.0), _rec("scrub", True, 0, 40.0)]
    table = compare_records(old, new, fields=("mia", "forget_acc", "mia_auc"))
    lines = table.splitlines()
    assert "mia old → new" in lines[0] and "mia_auc" not in lines[0]  # absent everywhere
    assert "unlearn_s" not in table
    row = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]: line for line in lines[2:]}
    assert "55.0 → 57.0" in row[("cf", "–")] and "2 / 2" in row[("cf", "–")]
    assert "70.0 → –" in row[("cf", "DC")] and "1 / 0" in row[("cf", "DC")]
    assert "– → 40.0" in row[("scrub", "DC")]


def test_the_command_line_reads_two_workdirs(tmp_path, capsys):
    for name, mia in (("a", 50.0), ("b", 55.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text(json.dumps(_rec("cf", False, 0, mia)))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d.md")]) == 0
    assert "50.0 → 55.0" in capsys.readouterr().out
    assert "50.0 → 55.0" in (tmp_path / "d.md").read_text()
    assert main([str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
