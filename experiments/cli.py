"""The one command line of every study: a few named flags and ``--set KEY=JSON`` for any value.

``main(get_config, run, doc, argv)`` parses the flags, builds the config, runs the study into
``--workdir`` and prints its ``results.md``; bad input is a one-line error (exit code 2), not a
traceback. Named flags exist only for the fields the study's config has:

- ``--workdir`` (required), ``--config NAME`` and ``--scale paper|cpu`` (studies with several
  dataset configurations), ``--seeds 3`` (a count) or ``--seeds 0,4`` (a list);
- ``--methods cf,a_cf`` (or ``all``), ``--dataset``, ``--data_dir``, ``--model``, ``--ipc``,
  ``--no_condensation`` / ``--only_condensation``, ``--save_params``;
- ``--set KEY=JSON`` (repeatable) for everything else: ``--set original.epochs=5``,
  ``--set method_hparams.cf.epochs=10``, ``--set 'ipcs=[1,10]'``. A value that is not JSON is
  taken as a string.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.configs.base import SCALES, Config
from experiments.io import log, prepare_workdir
from jaxunlearn.unlearn import available_methods

__all__ = ["apply_args", "build_parser", "main", "parse_seeds", "run_and_report", "set_value"]

# Named flags for config fields: flag -> (field, argparse keywords); added when the field exists.
_FIELD_FLAGS: dict[str, tuple[str, dict]] = {
    "--methods": ("methods", dict(help="comma-separated method names (default: the config's); "
                                       "'all' for every registered method")),
    "--seeds": ("seeds", dict(help="a count (3 = seeds 0, 1, 2) or a comma-separated list "
                                   "(0,4; 7, for seed 7 alone)")),
    "--dataset": ("dataset", dict(help="dataset name (digits, cifar10, cinic10, svhn, "
                                       "tfds:NAME, synthetic)")),
    "--data_dir": ("data_dir", dict(help="where the dataset archives are")),
    "--model": ("model", dict(help="convnet | resnet18 | resnet50 (drops the config's "
                                   "model_kwargs)")),
    "--ipc": ("ipc", dict(type=int, help="Blend clusters per class")),
    "--no_condensation": ("condensation", dict(action="store_true",
                                               help="skip the with-Blend column")),
    "--only_condensation": ("condensation", dict(action="store_true",
                                                 help="only the with-Blend column")),
    "--save_params": ("save_params", dict(action="store_true",
                                          help="save every unlearned model")),
}


def build_parser(doc: str, cfg: Config, configs: Sequence[str] | None = None,
                 scales: bool = False) -> argparse.ArgumentParser:
    """The parser of a study whose default config is ``cfg``.

    Args:
      doc: the study's module docstring (first line: the description, the rest: the epilog).
      cfg: the study's default configuration; flags are added for the fields it has.
      configs: names of the dataset configurations ``--config`` chooses among (None: no flag).
      scales: offer ``--scale`` (``get_config`` then takes ``scale=``).
    """
    head, _, rest = doc.strip().partition("\n")
    p = argparse.ArgumentParser(description=head, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="output folder (created; reruns resume)")
    if configs:
        p.add_argument("--config", default=configs[0], choices=list(configs),
                       help=f"dataset configuration (default {configs[0]})")
    if scales:
        p.add_argument("--scale", choices=SCALES,
                       help="paper: the paper's setting (GPU work); cpu: the documented "
                            "scaled-down CPU-sized form (default: the config's own)")
    names = {f.name for f in dataclasses.fields(cfg)}
    for flag, (field, kw) in _FIELD_FLAGS.items():
        if field in names:
            p.add_argument(flag, **kw)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config value, e.g. --set original.epochs=5 "
                        "--set method_hparams.cf.epochs=10")
    return p


def _parse_list(text: str, cast: Callable = str) -> tuple:
    return tuple(cast(t.strip()) for t in text.split(",") if t.strip())


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count (``3`` = seeds 0, 1, 2) or a list (``0,4``; ``7,`` for seed 7)."""
    seeds = _parse_list(text, int)
    if len(seeds) == 1 and "," not in text:
        if seeds[0] < 1:
            raise ValueError(f"--seeds {text} selects no seed: a single number is a count "
                             "(--seeds 1 runs seed 0); pick seeds with a list such as "
                             "--seeds 0,4 or --seeds 7,")
        return tuple(range(seeds[0]))
    return seeds


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the named flags, then every ``--set``, to ``cfg``."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    if get("methods"):
        cfg.methods = (tuple(available_methods()) if args.methods == "all"
                       else _parse_list(args.methods))
    if get("seeds"):
        cfg.seeds = parse_seeds(args.seeds)
    if get("model") is not None and args.model != cfg.model:
        # the config's model keywords belong to its own model (a ConvNet's depth and width)
        cfg.model_kwargs = {}
    for field in ("dataset", "data_dir", "model", "ipc"):
        if get(field) is not None:
            setattr(cfg, field, get(field))
    if get("no_condensation") and get("only_condensation"):
        raise ValueError("--no_condensation and --only_condensation exclude each other")
    if get("no_condensation"):
        cfg.condensation = (False,)
    if get("only_condensation"):
        cfg.condensation = (True,)
    if get("save_params"):
        cfg.save_params = True
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string
        set_value(cfg, key, value)
    return cfg


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set the config value at the dotted ``key`` (``original.epochs``, ``method_hparams.cf.lr``).

    A field of a section (a dataclass) must exist; dict fields take any key. A JSON list becomes
    a tuple for a top-level field; a dict given for a whole section becomes that section (fields
    it omits take their defaults).
    """
    parts = key.split(".")
    target: Any = cfg
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(target):
            if part not in {f.name for f in dataclasses.fields(target)}:
                where = ".".join(parts[:depth]) or "the config"
                raise ValueError(f"unknown config field {'.'.join(parts[:depth + 1])!r} "
                                 f"(in {where})")
            if not last:
                target = getattr(target, part)
                continue
            current = getattr(target, part)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                try:
                    value = type(current)(**value)
                except TypeError as e:
                    raise ValueError(f"--set {key}: {e}") from e
            elif isinstance(value, list) and target is cfg:
                value = tuple(value)
            setattr(target, part, value)
        elif isinstance(target, dict):
            if last:
                target[part] = value
            else:
                target = target.setdefault(part, {})
        else:
            raise ValueError(f"--set {key}: {'.'.join(parts[:depth])!r} holds a "
                             f"{type(target).__name__}, not a section")


def run_and_report(make_config: Callable[[], Any], run: Callable[[Any, str], Any],
                   workdir: str) -> int:
    """Build the config, run the study into ``workdir`` and print its ``results.md``.

    Returns the exit code: 0, or 2 after printing the message of a ValueError,
    FileNotFoundError or ImportError (bad input, missing data, a missing optional extra such as
    ``jaxunlearn[tfds]``) raised before or during the run.
    """
    try:
        cfg = make_config()
        t0 = time.perf_counter()
        run(cfg, workdir)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = prepare_workdir(workdir)
    with open(paths.results) as f:
        print(f.read())
    log(f"done in {time.perf_counter() - t0:.1f}s; records in {paths.records}")
    return 0


def main(get_config: Callable[..., Config], run: Callable[[Any, str], Any], doc: str,
         argv: Sequence[str] | None = None, *, configs: Sequence[str] | None = None,
         scales: bool = False) -> int:
    """Entry point of a study script: parse ``argv``, run, print the table; the exit code.

    ``get_config(name, scale=...)`` is called with ``--config`` when ``configs`` are given, and
    with ``scale=--scale`` when that flag was passed.
    """
    args = build_parser(doc, get_config(), configs, scales).parse_args(argv)

    def make_config() -> Config:
        kwargs = {"scale": args.scale} if getattr(args, "scale", None) else {}
        cfg = get_config(args.config, **kwargs) if configs else get_config(**kwargs)
        return apply_args(cfg, args)

    return run_and_report(make_config, run, args.workdir)
