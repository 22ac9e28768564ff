"""Framework adapters: one small module per framework, imported only when used.

The core speaks NumPy arrays. An adapter turns a framework's tensor into a host
NumPy array (zero-copy where the framework allows) and back. Detection looks at
the type's module name, so no framework is imported to check a value.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .base import Adapter, StorageView

__all__ = ["Adapter", "StorageView", "FRAMEWORKS", "adapter_for", "get_adapter", "pytree_children", "Inner"]

#: framework name -> module defining ``ADAPTER``, and the top-level packages of its types.
FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "numpy": ("tensorfile.frameworks.numpy", ("numpy", "ml_dtypes")),
    "torch": ("tensorfile.frameworks.torch", ("torch",)),
    "tensorflow": ("tensorfile.frameworks.tensorflow", ("tensorflow",)),
    "jax": ("tensorfile.frameworks.jax", ("jax", "jaxlib")),
    "mxnet": ("tensorfile.frameworks.mxnet", ("mxnet",)),
}

_loaded: dict[str, Adapter] = {}
_INSTALL = {
    "numpy": "pip install numpy",
    "mxnet": "MXNet 1.9.1 needs numpy<1.24: run it from the side environment (`make` builds .venv-mxnet) "
    "or pip install 'mxnet==1.9.1' 'numpy<1.24'",
}


def get_adapter(name: str) -> Adapter:
    """Return the adapter of framework ``name``, importing the framework.

    Raises:
        ValueError: ``name`` is not a known framework; the message lists them.
        ImportError: the framework is not installed (with an install hint).
    """
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; expected one of {sorted(FRAMEWORKS)}")
    if name not in _loaded:
        try:
            module = importlib.import_module(FRAMEWORKS[name][0])
        except ImportError as exc:
            hint = _INSTALL.get(name, f"pip install 'tensorfile[{name}]'")
            raise ImportError(f"framework {name!r} is not installed: {hint} ({exc})") from exc
        _loaded[name] = module.ADAPTER
    return _loaded[name]


def adapter_for(value: Any) -> Adapter | None:
    """Return the adapter whose framework ``value`` is a tensor of, else None."""
    top = type(value).__module__.partition(".")[0]
    for name, (_, packages) in FRAMEWORKS.items():
        if top in packages:
            adapter = get_adapter(name)
            return adapter if adapter.is_tensor(value) else None
    return None


class Inner:
    """What :func:`pytree_children` returns for a wrapper stored as its content (an NNX ``Variable``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def pytree_children(value: Any) -> "dict[Any, Any] | list[Any] | Inner | None":
    """The children of a JAX pytree node that is not a plain container (Flax ``FrozenDict``,
    ``TrainState``, ``nnx.State``, optax states, any class registered with ``jax.tree_util``), one level
    down: a dict by field or key name, or a list by position; an NNX ``Variable`` gives ``Inner(value)``.
    None for anything else, and whenever JAX is not imported (nothing is imported to check a value)."""
    if "jax" not in sys.modules or type(value).__module__ in ("builtins", "collections"):
        return None  # Python's own containers (defaultdict, deque...) are never taken apart: JAX registers some
    from .jax import children

    return children(value)
