"""retain_freed_memory: on by default on glibc, off by the environment variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxunlearn import hostmem

_PROBE = """
import ctypes, resource
from jaxunlearn.hostmem import retain_freed_memory
on = retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_of_big_alloc():
    n = 64 * 2**20  # 64 MiB: above glibc's mmap threshold
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)  # touch every page, as XLA writing a buffer does
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults_of_big_alloc()
print(on, faults_of_big_alloc())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("flag", ["1", "0"])
def test_freed_memory_is_reused_without_page_faults(flag, monkeypatch):
    """The second 64 MiB allocation re-uses touched pages (retained) or faults them in again."""
    monkeypatch.setenv("JAXUNLEARN_RETAIN_MEMORY", flag)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    on, faults = out[0] == "True", int(out[1])
    if flag == "1":
        assert on and faults < 1000  # 64 MiB is 16,384 pages
    else:
        assert not on and faults > 10000


def test_idempotent():
    first = hostmem.retain_freed_memory()
    assert hostmem.retain_freed_memory() == first
