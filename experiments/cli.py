"""The one command line of every study: a few named flags and ``--set KEY=JSON`` for any value.

``main(get_config, run, doc, argv)`` parses the flags, builds the config, runs the study into
``--workdir`` and prints its ``results.md``; bad input is a one-line error (exit code 2), not a
traceback. Named flags exist only for the fields the study's config has:

- ``--workdir`` (default ``runs/<study>``), ``--config NAME`` and ``--scale paper|cpu`` (studies
  with several dataset configurations), ``--seeds 3`` (a count) or ``--seeds 0,4`` (a list);
- ``--print_config``: print the resolved configuration, every method's effective
  hyper-parameters included (its factory's defaults merged with the config's values), and exit;
- ``--no_compile_cache``: JAX's persistent compilation cache is on by default, in
  ``$JAXUNLEARN_COMPILE_CACHE`` or ``~/.cache/jaxunlearn/jax`` (``JAXUNLEARN_COMPILE_CACHE=0``
  turns it off too): a rerun, or another study with the same programs, skips their compilation;
- ``--methods cf,a_cf`` (or ``all``), ``--dataset``, ``--data_dir``, ``--model``, ``--ipc``,
  ``--no_condensation`` / ``--only_condensation``, ``--save_params``;
- ``--set KEY=JSON`` (repeatable) for everything else: ``--set original.epochs=5``,
  ``--set method_hparams.cf.epochs=10``, ``--set 'ipcs=[1,10]'``. A value that is not JSON is
  taken as a string where the field is a string; a value of the wrong type for its field is a
  one-line error naming the key and the type expected.
- Several processes (JAX's multi-controller runtime, one process per host or per GPU):
  ``--coordinator HOST:PORT --num_processes N --process_id I`` in each process, or
  ``--distributed`` on a cluster JAX detects (SLURM, Open MPI...). Every process runs the same
  study over one mesh of all their devices; process 0 writes the workdir (docs/processes.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from experiments.configs.base import SCALES, Config, to_json, use_model
from experiments.io import log, prepare_workdir
from experiments.report import column_label
from jaxunlearn import sharding
from jaxunlearn.hostmem import retain_freed_memory
from jaxunlearn.unlearn import available_methods, factory_defaults

__all__ = ["apply_args", "build_parser", "compile_cache_dir", "main", "parse_seeds",
           "resolved_config", "run_and_report", "set_value", "start_processes",
           "use_compile_cache"]

# Datasets of images so small (digits: 8×8; mnist5k: 28×28×1, ≈6 MiB per activation of a
# batch-64 step of its width-32 ConvNet) that one malloc arena for every thread would slow their
# steps (jaxunlearn/hostmem.py); every other dataset gets the single arena.
SMALL_IMAGE_DATASETS = ("digits", "mnist5k")

# Named flags for config fields: flag -> (field, argparse keywords); added when the field exists.
_FIELD_FLAGS: dict[str, tuple[str, dict]] = {
    "--methods": ("methods", dict(help="comma-separated method names (default: the config's); "
                                       "'all' for every registered method")),
    "--seeds": ("seeds", dict(help="a count (3 = seeds 0, 1, 2) or a comma-separated list "
                                   "(0,4; 7, for seed 7 alone)")),
    "--dataset": ("dataset", dict(help="dataset name (digits, mnist5k, cifar10, cinic10, "
                                       "svhn, tfds:NAME, synthetic)")),
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
    head, _, rest = doc.replace("``", "").strip().partition("\n")  # reST literals as plain text
    script = os.path.splitext(os.path.basename(sys.argv[0] or ""))[0]
    prog = (f"python -m experiments.{script}" if script and script.isidentifier()
            and script not in ("__main__", "pytest") else None)
    p = argparse.ArgumentParser(prog=prog, description=head, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join("runs", cfg.name),
                   help="output folder (created; reruns resume; default: runs/<study>)")
    p.add_argument("--print_config", action="store_true",
                   help="print the resolved configuration, with every method's effective "
                        "hyper-parameters, and exit")
    p.add_argument("--no_compile_cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (default: on, in "
                        "$JAXUNLEARN_COMPILE_CACHE or ~/.cache/jaxunlearn/jax)")
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
    mp = p.add_argument_group("several processes (JAX multi-controller; process 0 writes the "
                              "workdir, which every process must see)")
    mp.add_argument("--coordinator", metavar="HOST:PORT",
                    help="address of process 0's coordination service")
    mp.add_argument("--num_processes", type=int, help="number of processes")
    mp.add_argument("--process_id", type=int, help="this process's id, in [0, num_processes)")
    mp.add_argument("--distributed", action="store_true",
                    help="join the processes of a cluster JAX detects (SLURM, Open MPI, "
                         "Kubernetes; or JAX_COORDINATOR_ADDRESS) without the three flags above")
    return p


def start_processes(args: argparse.Namespace) -> None:
    """Join the multi-controller runtime when the flags ask for it (before any JAX work)."""
    given = (getattr(args, "coordinator", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))
    if getattr(args, "distributed", False) and any(v is not None for v in given):
        raise ValueError("--distributed detects the cluster's processes itself: give it alone, "
                         "or --coordinator, --num_processes and --process_id")
    if getattr(args, "distributed", False) or any(v is not None for v in given):
        sharding.initialize_distributed(*given)


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
    if get("model") is not None:
        # drops the old model's keywords; the model's method values (configs/base.py)
        use_model(cfg, args.model)
    for field in ("dataset", "data_dir", "ipc"):
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
            value = _BareString(text)  # legal only where the field is a string
        set_value(cfg, key, value)
    return cfg


class _BareString(str):
    """A ``--set`` value that is not JSON: a string, unless the field wants something else."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return "a JSON object of its fields" if dataclasses.is_dataclass(tp) else tp.__name__
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args)
    origin = typing.get_origin(tp)
    return f"{origin.__name__} of {', '.join(_type_name(a) for a in args if a is not ...)}"


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` (parsed JSON) fits the declared type ``tp``.

    JSON arrays become tuples where the field is a tuple, ints become floats where it is a float.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (types.UnionType, typing.Union):
        for a in args:
            ok, v = _conform(value, a)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if isinstance(value, _BareString) and tp is not str:
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), str(value) if isinstance(value, str) else value
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp)), value
    container = origin or tp
    if container in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        elem = args[0] if args and (len(args) == 1 or args[-1] is ...) else Any
        items = [_conform(v, elem) for v in value]
        return all(ok for ok, _ in items), container(v for _, v in items)
    if container is dict:
        return isinstance(value, dict), value
    return True, value  # a type this checker does not know: accepted as given


def _check_type(key: str, target: Any, field: str, value: Any) -> Any:
    """``value`` conformed to the declared type of ``target``'s dataclass ``field``, or an error."""
    tp = typing.get_type_hints(type(target))[field]
    ok, value = _conform(value, tp)
    if not ok:
        shown = (f"{value!r} (not valid JSON)" if isinstance(value, _BareString)
                 else json.dumps(value))
        raise ValueError(f"--set {key}: expected {_type_name(tp)}, got {shown}")
    return value


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set the config value at the dotted ``key`` (``original.epochs``, ``method_hparams.cf.lr``).

    A field of a section (a dataclass) must exist and the value must fit its declared type
    (``int``, ``float``, ``str | None``, ``tuple``...; a JSON array becomes a tuple where the field
    is one), else a one-line ``ValueError`` names the key and what was expected; dict fields
    (``method_hparams``) take any key and value. A dict given for a whole section becomes that
    section (fields it omits take their defaults).
    """
    parts = key.split(".")
    target: Any = cfg
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(target):
            names = [f.name for f in dataclasses.fields(target)]
            if part not in names:
                where = ".".join(parts[:depth]) or "the config"
                close = difflib.get_close_matches(part, names, n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"unknown config field {'.'.join(parts[:depth + 1])!r} "
                                 f"(in {where}){hint}")
            if not last:
                target = getattr(target, part)
                continue
            current = getattr(target, part)
            value = _check_type(key, target, part, value)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                for name, v in value.items():
                    if name in {f.name for f in dataclasses.fields(current)}:
                        value[name] = _check_type(f"{key}.{name}", current, name, v)
                try:
                    value = type(current)(**value)
                except TypeError as e:
                    raise ValueError(f"--set {key}: {e}") from e
            setattr(target, part, value)
        elif isinstance(target, dict):
            if last:
                target[part] = str(value) if isinstance(value, _BareString) else value
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
    the ``tfds`` extra) raised before or during the run.
    """
    try:
        cfg = make_config()
        t0 = time.perf_counter()
        run(cfg, workdir)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if sharding.is_primary():  # the process that wrote them
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
    if not args.no_compile_cache:
        use_compile_cache()

    def make_config() -> Config:
        start_processes(args)
        kwargs = {"scale": args.scale} if getattr(args, "scale", None) else {}
        cfg = get_config(args.config, **kwargs) if configs else get_config(**kwargs)
        cfg = apply_args(cfg, args)
        if getattr(cfg, "dataset", "digits") not in SMALL_IMAGE_DATASETS:
            # before any JAX work: buffers above 64 MiB (jaxunlearn/hostmem.py)
            retain_freed_memory(single_arena=True)
        return cfg

    if args.print_config:
        try:
            print(json.dumps(resolved_config(make_config()), indent=2, sort_keys=True,
                             default=str))
        except (ValueError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    return run_and_report(make_config, run, args.workdir)


def compile_cache_dir() -> str | None:
    """Where the CLIs keep JAX's persistent compilation cache: ``$JAXUNLEARN_COMPILE_CACHE``
    (``0`` or empty: none), else ``$XDG_CACHE_HOME/jaxunlearn/jax`` or
    ``~/.cache/jaxunlearn/jax``."""
    env = os.environ.get("JAXUNLEARN_COMPILE_CACHE")
    if env is not None:
        return None if env.strip() in ("", "0") else os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxunlearn", "jax")


def use_compile_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (:func:`compile_cache_dir`) for programs that
    took at least 0.2 s to compile; the folder it uses, or ``None``. Compiled programs are keyed
    by their HLO, the backend, the XLA flags and the versions: a hit is the same program."""
    import jax

    path = compile_cache_dir()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def resolved_config(cfg: Config) -> dict:
    """The config as ``config.json`` holds it, plus ``resolved_methods``: for every method and
    column, the keyword arguments its factory receives merged over its defaults."""
    out = json.loads(to_json(cfg))
    methods = getattr(cfg, "methods", None)
    if methods is None or not hasattr(cfg, "hparams"):
        return out
    resolved: dict = {}
    for name in methods:
        base = cfg.method_of(name)
        defaults = factory_defaults(base)
        for condensed in getattr(cfg, "condensation", (False,)):
            given = cfg.hparams(name, condensed)
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise ValueError(f"method {name!r} ({base}) takes no {unknown}; its "
                                 f"hyper-parameters: {sorted(defaults)}")
            resolved[column_label(name, condensed)] = {
                "method": base, **defaults, **given}
    out["resolved_methods"] = resolved
    return out
