"""Tests of experiments.io's records: torn tails are repaired, any other bad line is an error."""

import json

import pytest

from experiments import class_forget
from experiments.io import Ledger, append_record, load_records
from experiments.study import record_ledger

RECORD_KEYS = ("method", "condensed", "seed")

_A = {"method": "cf", "condensed": False, "seed": 0, "mia": 50.0}
_B = {"method": "cf", "condensed": True, "seed": 0, "mia": 51.0}


def _write(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def test_a_torn_last_line_is_cut_off_atomically_and_logged(tmp_path, capsys):
    good = json.dumps(_A) + "\n"
    path = _write(tmp_path / "records.jsonl", good + json.dumps(_B)[:17])
    assert load_records(path, RECORD_KEYS) == [_A]
    assert open(path).read() == good  # the torn tail is gone, the good record kept
    assert "torn last line" in capsys.readouterr().out
    append_record(path, _B)  # the next record starts on a line of its own
    assert load_records(path, RECORD_KEYS) == [_A, _B]
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_complete_but_unterminated_last_record_is_kept_and_terminated(tmp_path):
    path = _write(tmp_path / "records.jsonl", json.dumps(_A) + "\n" + json.dumps(_B))
    assert load_records(path, RECORD_KEYS) == [_A, _B]
    append_record(path, {**_B, "seed": 1})
    assert len(load_records(path, RECORD_KEYS)) == 3


def test_the_ledger_is_the_one_resume_rule(tmp_path, capsys):
    path = _write(tmp_path / "records.jsonl", json.dumps(_A) + "\n")
    ledger = record_ledger(path)
    # values read back from JSON are normalised; a record without variant/round is round 0
    assert ledger.has({"method": "cf", "condensed": 0, "variant": None, "seed": 0, "round": 0})
    assert not ledger.has({**_B, "variant": None, "round": 0})
    runs = [{**r, "variant": None, "round": 0} for r in (_A, _B)]
    assert not ledger.seed_done(0, runs)
    ledger.append(_B)  # written, and counted as done
    assert ledger.seed_done(0, runs) and "seed 0: all records present" in capsys.readouterr().out
    written = load_records(path, RECORD_KEYS)
    assert written[0] == _A and {k: written[1][k] for k in _B} == _B
    assert set(written[1]["provenance"]) == {"versions", "git_commit", "git_dirty", "devices"}
    assert written[1]["provenance"]["versions"]["jax"]  # where the number came from
    assert ledger.get({**_B, "round": 0})["mia"] == 51.0
    with pytest.raises(ValueError, match="lacks 'ipc'"):  # a key field these records lack
        Ledger(path, {"method": str, "ipc": int, "seed": int})


@pytest.mark.parametrize("lines,lineno,match", [
    ([json.dumps(_A), '{"method": "cf", "cond', json.dumps(_B)], 2, "not a JSON record"),
    ([json.dumps(_A), "[1, 2]", json.dumps(_B)], 2, "a record is a JSON object, got list"),
    ([json.dumps({"method": "cf", "seed": 0}), json.dumps(_B)], 1, "lacks 'condensed'"),
    ([json.dumps(_A), json.dumps({"ipc": 10, "method": "dm_1x", "seed": 0})], 2,
     "lacks 'condensed'"),  # a record of another study, even as the last line
    ([json.dumps(_A), "not json"], 2, "not a JSON record"),  # terminated: not a torn write
])
def test_a_bad_record_is_an_error_naming_file_and_line_and_nothing_is_written(
        tmp_path, lines, lineno, match):
    text = "\n".join(lines) + "\n"
    path = _write(tmp_path / "records.jsonl", text)
    with pytest.raises(ValueError, match=match) as e:
        load_records(path, RECORD_KEYS)
    assert f"records.jsonl, line {lineno}:" in str(e.value) and "repair or delete" in str(e.value)
    assert open(path).read() == text


def test_a_study_stops_with_one_line_on_a_foreign_record(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    text = json.dumps({"method": "dm_1x", "ipc": 10, "seed": 0}) + "\n"
    _write(work / "records.jsonl", text)
    code = class_forget.main(["--workdir", str(work), "--seeds", "1", "--methods", "cf",
                              "--set", "original.epochs=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "line 1: the record lacks 'condensed'" in err and "Traceback" not in err
    assert (work / "records.jsonl").read_text() == text


def test_study_progress_counts_runs_and_estimates_the_rest(capsys, monkeypatch):
    from experiments import io

    clock = iter([0.0, 10.0, 30.0])
    monkeypatch.setattr(io.time, "perf_counter", lambda: next(clock))
    p = io.Progress(4)
    p.start("cf seed 0")
    p.start("dm ipc 1 seed 0 (2 budgets)", runs=2)  # 10 s for one run: 30 s for the 3 left
    p.start("a_cf seed 1")  # 30 s for three runs: 10 s for the one left
    out = capsys.readouterr().out
    assert "[1/4] cf seed 0" in out
    assert "[2-3/4, about 30 s left] dm ipc 1 seed 0" in out
    assert "[4/4, about 10 s left] a_cf seed 1" in out
