"""Where a result comes from: library versions, the git commit, the devices (written into
``config.json`` and every record, so a number can be traced to the code and hardware that made
it)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess

__all__ = ["provenance"]

_PACKAGES = ("jaxunlearn", "jax", "jaxlib", "flax", "optax")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", _ROOT, *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.cache
def provenance() -> dict:
    """``{"versions": {package: version}, "git_commit", "git_dirty", "devices": {"platform",
    "kind", "count", "processes"}}``; the commit is ``None`` outside a git checkout."""
    import jax

    commit = _git("rev-parse", "HEAD") if os.path.isdir(os.path.join(_ROOT, ".git")) else None
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    devices = jax.devices()
    return {"versions": {p: _version(p) for p in _PACKAGES}, "git_commit": commit,
            "git_dirty": dirty,
            "devices": {"platform": devices[0].platform, "kind": devices[0].device_kind,
                        "count": len(devices), "processes": jax.process_count()}}
