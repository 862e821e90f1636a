"""A study's files: the workdir, atomic writes, JSON-lines records, checkpoints, the saved config.

Files are written atomically (temp file + rename; records are appended one fsync-ed line at a
time), so nothing written is lost when a run fails or is interrupted, and a rerun resumes.

A study run as several processes (``--coordinator``, :mod:`jaxunlearn.sharding`) shares one
workdir on a filesystem every process sees. Process 0 alone writes files and logs; what decides
the work left (the records done, whether a checkpoint or a cached partition exists, a config
clash) is read by process 0 and handed to every process (:func:`jaxunlearn.sharding.agree`), so
all processes take the same path; checkpoints are saved and restored by every process together
(orbax's multi-process checkpointing), each writing its part.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.configs.base import Config, to_json
from experiments.provenance import provenance
from jaxunlearn import sharding

__all__ = ["LOG_FILE", "Ledger", "Progress", "StudyPaths", "append_record", "atomic_write",
           "check_workdir", "column_slug", "exists", "load_records", "log", "log_to_file",
           "prepare_workdir", "remove_tree", "restore_params", "save_config", "save_params"]


LOGGER = logging.getLogger("jaxunlearn.experiments")
LOG_FILE = "run.log"


class _Stdout(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stdout`` is at each line (so a redirected
    or captured stdout gets the lines)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stdout

    @stream.setter
    def stream(self, value):
        del value


def _configure_logger() -> logging.Logger:
    if not LOGGER.handlers:
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False
    return LOGGER


def log(msg: str) -> None:
    """Log a time-stamped line to stdout and, once a workdir is open, to its ``run.log``
    (process 0 only, when several processes run a study)."""
    if sharding.is_primary():
        _configure_logger().info(msg)


def log_to_file(workdir: str) -> None:
    """Append every later :func:`log` line to ``<workdir>/run.log`` too (one file per workdir;
    a rerun appends)."""
    if not sharding.is_primary():
        return
    logger = _configure_logger()
    path = os.path.join(workdir, LOG_FILE)
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            if h.baseFilename == os.path.abspath(path):
                return
            logger.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)


class Progress:
    """Study-level progress: ``[k/n, ETA]`` before each run of a study (method × column × seed
    × round), the ETA from the mean time of the runs done so far in this process."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = int(total), 0, time.perf_counter()

    def start(self, what: str, runs: int = 1) -> None:
        """Log that ``what`` starts (``runs`` runs of the total at once; call in order)."""
        eta = ""
        if self.done:
            left = (time.perf_counter() - self.t0) / self.done * (self.total - self.done)
            eta = (f", about {left / 60:.0f} min left" if left >= 90
                   else f", about {left:.0f} s left")
        first, self.done = self.done + 1, self.done + runs
        span = f"{first}" if runs == 1 else f"{first}-{self.done}"
        log(f"[{span}/{self.total}{eta}] {what}")


def column_slug(condensed: bool) -> str:
    """How a column is named in file names: ``"dc"`` (with Blend) or ``"nodc"``."""
    return "dc" if condensed else "nodc"


def exists(path: str, kind: str = "any") -> bool:
    """Whether ``path`` exists (``kind="dir"``: is a directory), as process 0 sees it."""
    test = os.path.isdir if kind == "dir" else os.path.exists
    return sharding.agree(lambda: test(path))


class StudyPaths(NamedTuple):
    root: str
    config: str
    records: str
    results: str
    checkpoints: str


def check_workdir(workdir: str) -> str:
    """The absolute ``workdir``; ValueError if it exists and is not a directory."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir!r} exists and is not a directory")
    return workdir


def prepare_workdir(workdir: str) -> StudyPaths:
    """Create ``workdir`` (ValueError if it is a file), log into its ``run.log`` from now on, and
    name its files."""
    workdir = check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    log_to_file(workdir)
    return StudyPaths(workdir, os.path.join(workdir, "config.json"),
                      os.path.join(workdir, "records.jsonl"), os.path.join(workdir, "results.md"),
                      os.path.join(workdir, "checkpoints"))


def atomic_write(path: str, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (process 0 only)."""
    if not sharding.is_primary():
        return
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Records: one JSON line each


def load_records(path: str, required: tuple[str, ...] = ()) -> list[dict]:
    """Records of ``records.jsonl``, each a JSON object with the ``required`` keys.

    A torn last line, as a kill during :func:`append_record` leaves it (no final newline, not
    valid JSON), is cut off the file atomically and logged, so the next record starts on a line
    of its own and the torn one is recomputed. Any other bad line stops the run with a
    ``ValueError`` naming the file and the line, and nothing is written: a record that is not
    JSON, not an object, or lacks a ``required`` key (a record of another study, or edited by
    hand) is never skipped silently.

    With several processes, process 0 reads (and repairs) the file and every process gets its
    records.
    """
    return sharding.agree(lambda: _read_records(path, required))


def _read_records(path: str, required: tuple[str, ...]) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            out.append(_parse_record(path, i, line, required))
    if torn.strip():
        try:
            out.append(_parse_record(path, len(lines) + 1, torn, required))
        except _NotJSON:
            atomic_write(path, raw[:len(raw) - len(torn)])
            log(f"{path}: cut a torn last line ({len(torn)} bytes, an interrupted write) off "
                "the records; that record will be recomputed")
        else:
            atomic_write(path, raw + b"\n")  # complete but unterminated: terminate it
    return out


class _NotJSON(ValueError):
    pass


def _parse_record(path: str, lineno: int, line: bytes, required: tuple[str, ...]) -> dict:
    repair = (f"repair or delete line {lineno} of {path} (a deleted record is recomputed by "
              "the next run), or run into another --workdir")
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _NotJSON(f"{path}, line {lineno}: not a JSON record ({e}); {repair}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {lineno}: a record is a JSON object, got "
                         f"{type(record).__name__}; {repair}")
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"{path}, line {lineno}: the record lacks {', '.join(map(repr, missing))}"
                         f" (a record of another study, or incomplete); {repair}")
    return record


def append_record(path: str, record: dict) -> None:
    """Append ``record`` as one line (keys starting with ``_`` are not written; process 0
    only)."""
    if not sharding.is_primary():
        return
    public = {k: v for k, v in record.items() if not k.startswith("_")}
    with open(path, "a") as f:
        f.write(json.dumps(public, sort_keys=True, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())



class Ledger:
    """What a study has done: its records, keyed by the fields that name one run.

    Every study resumes by this one rule: a run whose key is in the ledger is not recomputed,
    and a seed whose runs are all in it is skipped whole, before its data or models are
    prepared (:meth:`seed_done`). A study names its key's fields, each with the function that
    normalises a value read back from JSON (``bool``, ``int``, ``str``) and, for a field older
    records may lack, a default.

    Args:
      path: the study's ``records.jsonl`` (read through :func:`load_records`: with several
        processes, process 0 reads and every process gets the same ledger).
      key: ``{field: normalise}`` in key order.
      defaults: ``{field: value}`` for fields a record may omit (e.g. ``round``: 0).
    """

    def __init__(self, path: str, key: Mapping[str, Callable[[Any], Any]],
                 defaults: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.fields = dict(key)
        self.defaults = dict(defaults or {})
        required = tuple(f for f in self.fields if f not in self.defaults)
        self._records = {self.key(r): r for r in load_records(path, required)}

    def key(self, run: Mapping[str, Any]) -> tuple:
        """The normalised key of a run (a record, or a mapping of the key's fields)."""
        out = []
        for name, normalise in self.fields.items():
            value = run[name] if name in run else self.defaults[name]
            out.append(None if value is None else normalise(value))
        return tuple(out)

    def has(self, run: Mapping[str, Any]) -> bool:
        """Whether the run is done."""
        return self.key(run) in self._records

    def get(self, run: Mapping[str, Any]) -> dict:
        """The record of a done run (``KeyError`` otherwise)."""
        return self._records[self.key(run)]

    def seed_done(self, seed: int, runs: Iterable[Mapping[str, Any]]) -> bool:
        """True, and logged, when every one of the seed's ``runs`` is done."""
        if all(self.has(r) for r in runs):
            log(f"seed {seed}: all records present, skipping")
            return True
        return False

    def append(self, record: dict) -> None:
        """Write a record (:func:`append_record`), with the run's
        :func:`~experiments.provenance.provenance`, and count its run as done."""
        record = {**record, "provenance": record.get("provenance") or provenance()}
        append_record(self.path, record)
        self._records[self.key(record)] = record


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


# ---------------------------------------------------------------------------------------------
# The configuration, saved once per workdir


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` (and the run's :func:`~experiments.provenance.provenance`) to ``path``;
    refuse a workdir that holds another configuration.

    A rerun may change the fields in ``cfg.GROWABLE`` (more seeds, methods, columns...); any
    other difference would mix records of two studies, so it raises ValueError (on every
    process: process 0 checks).
    """
    text = json.dumps({**json.loads(to_json(cfg)), "provenance": provenance()}, indent=2,
                      sort_keys=True)
    sharding.agree(lambda: _check_and_save_config(text, path, cfg.GROWABLE))


def _check_and_save_config(text: str, path: str, growable) -> None:
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)  # raw JSON: compared field by field
        new = json.loads(text)
        # the provenance of the latest run is written; records carry each run's own
        diff = sorted(k for k in set(old) | set(new)
                      if k not in (*growable, "provenance") and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"workdir {os.path.dirname(path)!r} holds a study with a different "
                             f"configuration (differs in {diff}); use another --workdir")
    atomic_write(path, text)


# ---------------------------------------------------------------------------------------------
# Checkpoints (orbax)


def save_params(path: str, params: Any) -> None:
    """Checkpoint ``params`` at ``path``, replacing a partial one left by an interrupted run.

    With several processes every process calls this together (orbax writes each process's part
    of the arrays; process 0 removes the old checkpoint first)."""
    if sharding.is_primary():
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    sharding.barrier(f"save_params:{path}")
    if jax.process_count() > 1:  # orbax saves global arrays; a process-local one is replicated
        params = jax.tree.map(lambda a: a if isinstance(a, jax.Array) and not
                              a.is_fully_addressable else sharding.replicate(a), params)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()


def remove_tree(path: str) -> None:
    """Delete the folder ``path`` if it exists (process 0 only)."""
    if sharding.is_primary() and os.path.isdir(path):
        shutil.rmtree(path)


def restore_params(path: str, template: Any) -> Any:
    """The parameters checkpointed at ``path``, with the structure (and the placement) of
    ``template``; every process calls this together when there are several."""
    return ocp.StandardCheckpointer().restore(path, template)
