"""Live training objects in a checkpoint's state: saved through their state, filled in place on restore.

Kinds (the name is recorded with the checkpoint):

- ``torch.module``: ``nn.Module`` -> ``state_dict()`` / ``load_state_dict``.
- ``torch.stateful``: torch optimizers, LR schedulers, ``GradScaler`` (anything
  from torch with ``state_dict`` / ``load_state_dict``).
- ``keras.layer``: Keras models and layers -> their variables by attribute path
  (:mod:`tensorfile.parameters.models`).
- ``keras.optimizer``: a Keras optimizer -> its variables in order (built on
  restore from the Keras model restored with it, if needed).
- ``flax.nnx``: a Flax NNX module -> its parameters and batch statistics.
- ``pytree``: a JAX pytree that is not a plain container (optax states, which are
  NamedTuples) -> its leaves; restored into the structure of the object given.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..parameters.models import model_params

__all__ = ["kind_of", "capture", "apply"]


def _mro(value: Any) -> set[str]:
    return {f"{c.__module__.partition('.')[0]}.{c.__name__}" for c in type(value).__mro__}


def kind_of(value: Any) -> str | None:
    """The live kind of ``value``, or None for data (tensors, containers, plain values)."""
    mro = _mro(value)
    if "torch.Module" in mro:
        return "torch.module"
    from_torch = any(c.__module__.startswith("torch") for c in type(value).__mro__[:-1])
    if from_torch and hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return "torch.stateful"  # optimizers, LR schedulers, GradScaler, and their subclasses
    if "keras.Optimizer" in mro or any(m.startswith("keras.") and m.endswith("Optimizer") for m in mro):
        return "keras.optimizer"
    if "keras.Layer" in mro:
        return "keras.layer"
    if any(c.__module__.startswith("flax.nnx") for c in type(value).__mro__):
        return "flax.nnx"
    if _holds_namedtuple(value):
        return "pytree"
    return None


def _holds_namedtuple(value: Any, depth: int = 0) -> bool:
    """True for NamedTuples and plain tuples/lists holding them (optax states: ``(ScaleByAdamState(...), ...)``)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return True
    if type(value) in (tuple, list) and depth < 8:
        return any(_holds_namedtuple(v, depth + 1) for v in value)
    return False


def capture(kind: str, value: Any) -> Any:
    """What to store for a live object."""
    if kind in ("torch.module", "torch.stateful"):
        return value.state_dict()
    if kind in ("keras.layer", "flax.nnx"):
        return dict(model_params(value).tensors)
    if kind == "keras.optimizer":
        return [np.asarray(v) for v in value.variables]
    if kind == "pytree":
        import jax

        return jax.tree_util.tree_leaves(value)
    raise ValueError(kind)


def apply(kind: str, live: Any, saved: Any, others: Mapping[str, Any]) -> Any:
    """Fill ``live`` from ``saved``; returns the restored object (a new one for immutable pytrees)."""
    if kind in ("torch.module", "torch.stateful"):
        live.load_state_dict(saved)
        return live
    if kind in ("keras.layer", "flax.nnx"):
        params = model_params(live)
        for name, param in params.params.items():
            param.set(np.asarray(saved[name]))
        return live
    if kind == "keras.optimizer":
        if len(live.variables) != len(saved):
            models = [m for m in others.values() if kind_of(m) == "keras.layer"]
            if models:
                live.build(models[0].trainable_variables)
        if len(live.variables) != len(saved):
            raise ValueError(f"the Keras optimizer has {len(live.variables)} variables, the checkpoint {len(saved)}")
        for variable, value in zip(live.variables, saved):
            variable.assign(np.asarray(value))
        return live
    if kind == "pytree":
        import jax
        import jax.numpy as jnp

        treedef = jax.tree_util.tree_structure(live)
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(np.asarray(leaf)) for leaf in saved])
    raise ValueError(kind)
