"""Unlearning methods behind one interface (see :mod:`jaxunlearn.unlearn.base`).

Importing this package registers every method; build one with :func:`make_method` and run it with
:func:`run_method`.
"""

from jaxunlearn.unlearn import (  # noqa: F401  (registration)
    aamu,  # noqa: F401,I001  (registration; wraps the base methods)
    bad_teacher,
    distill,
    finetune,
    neggrad,
    pruning,
    relabel,
    retrain,
    scrub,
    sparse,
    ssd,
)
from jaxunlearn.unlearn.base import (
    JointRegulariser,
    Method,
    RetainObjective,
    UnlearnData,
    UnlearnOutput,
    available_methods,
    factory_defaults,
    make_method,
    make_unlearn_data,
    register,
    retain_forward,
    run_method,
    stack_unlearn_data,
)

__all__ = [
    "JointRegulariser",
    "Method",
    "RetainObjective",
    "UnlearnData",
    "UnlearnOutput",
    "available_methods",
    "factory_defaults",
    "make_method",
    "make_unlearn_data",
    "register",
    "retain_forward",
    "run_method",
    "stack_unlearn_data",
]
