"""Experiment scripts of jaxunlearn: thin, importable, each with ``run(config, workdir)``.

Importing this package first makes glibc keep freed memory
(:func:`jaxunlearn.hostmem.retain_freed_memory`), before JAX starts: XLA:CPU's large buffers then
stop page-faulting on every step. The command line (``experiments.cli.main``) adds the single
arena for datasets of 32×32 images and larger, before any JAX work. ``JAXUNLEARN_RETAIN_MEMORY=0``
turns both off.
"""

from jaxunlearn.hostmem import retain_freed_memory

retain_freed_memory(single_arena=False)
