"""Optimisers and per-epoch learning-rate schedules.

Optimisers take their learning rate through ``optax.inject_hyperparams``, so a schedule is stepped
per epoch (as in the paper's reference) by writing the rate into the optimiser state
(:func:`set_learning_rate`), without recompiling the step. Schedules are plain ``epoch -> lr``
functions of the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxunlearn import sharding

__all__ = [
    "adam",
    "constant_with_warmup",
    "cosine_with_warmup",
    "get_learning_rate",
    "make_optimizer",
    "set_learning_rate",
    "sgd",
]


def sgd(learning_rate: float, momentum: float = 0.0, weight_decay: float = 0.0,
        nesterov: bool = False) -> optax.GradientTransformation:
    """PyTorch-style SGD: *coupled* weight decay (added to the gradient before momentum).

    The learning rate is an injected hyper-parameter (see :func:`set_learning_rate`).
    """

    def _make(learning_rate):
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(learning_rate, momentum=momentum if momentum else None, nesterov=nesterov),
        )

    return optax.inject_hyperparams(_make)(learning_rate=learning_rate)


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (PyTorch defaults) with optional coupled L2 weight decay; injectable learning rate."""

    def _make(learning_rate):
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))

    return optax.inject_hyperparams(_make)(learning_rate=learning_rate)


def make_optimizer(name: str, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
    """``sgd`` (coupled weight decay, momentum) or ``adam``, with an injected learning rate."""
    if name == "sgd":
        return sgd(lr, momentum, weight_decay)
    if name == "adam":
        return adam(lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adam'")


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    """Return ``opt_state`` with its injected learning rate set to ``lr``."""
    if not hasattr(opt_state, "hyperparams"):
        raise ValueError("optimiser state has no injected hyper-parameters; build it with "
                         "jaxunlearn.optim.sgd/adam or optax.inject_hyperparams")
    hp = dict(opt_state.hyperparams)
    old = hp["learning_rate"]
    # same shape as before: a stack of M models' optimiser states holds M learning rates
    new = jnp.full(jnp.shape(old), lr, jnp.asarray(old).dtype)
    if isinstance(old, jax.Array):
        # keep the placement (e.g. replicated over the data mesh) so compiled steps still match
        new = sharding.put(new, old.sharding)
    hp["learning_rate"] = new
    return opt_state._replace(hyperparams=hp)


def get_learning_rate(opt_state: Any) -> jax.Array:
    """The injected learning rate of ``opt_state`` (see :func:`set_learning_rate`)."""
    return opt_state.hyperparams["learning_rate"]


def cosine_with_warmup(base_lr: float, epochs: int, warmup_epochs: int = 0,
                       final_lr: float = 0.0) -> Callable[[int], float]:
    """Per-epoch schedule: linear warm-up over ``warmup_epochs`` then cosine to ``final_lr``.

    Epoch e < warmup gets ``base_lr·(e+1)/warmup``; afterwards
    ``final + (base − final)·½(1 + cos(π (e − warmup) / (epochs − warmup)))`` (method.md §2, §5).
    """

    def schedule(epoch: int) -> float:
        if epoch < warmup_epochs:
            return base_lr * (epoch + 1) / warmup_epochs
        span = max(epochs - warmup_epochs, 1)
        t = (epoch - warmup_epochs) / span
        return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    return schedule


def constant_with_warmup(lr: float, warmup_epochs: int = 0) -> Callable[[int], float]:
    """Per-epoch schedule: linear warm-up ``lr·(e+1)/warmup`` then the constant ``lr``."""

    def schedule(epoch: int) -> float:
        if epoch < warmup_epochs:
            return lr * (epoch + 1) / warmup_epochs
        return lr

    return schedule
