"""tensorfile: save and load tensors, parameters and checkpoints safely and fast.

One API for NumPy, PyTorch, TensorFlow/Keras, JAX and MXNet on a safetensors-compatible
file that also records structure and checksums, and never runs code when loaded:
tensors and containers (:func:`save` / :func:`load` / :func:`open`), model parameters
(:func:`save_parameters` / :func:`load_parameters`), architecture and parameters in one
file rebuilt in any framework (:func:`save_model` / :func:`load_model`), and crash-safe
training checkpoints (:class:`CheckpointManager`); sharded checkpoints of ``torch.distributed``
jobs in :mod:`tensorfile.distributed`.

    >>> import numpy as np, tensorfile
    >>> tensorfile.save({"x": np.arange(4), "step": 3}, "mydict")
    >>> tensorfile.load("mydict")
    {'x': array([0, 1, 2, 3]), 'step': 3}

See ``docs/FORMAT.md`` for the file format.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CheckpointCommitError,
    CheckpointConflictError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    FormatError,
    IntegrityError,
    LimitError,
    ParameterMismatchError,
    TensorFileError,
    UnsafeFileError,
    UnsupportedArchitectureError,
    UnsupportedTypeError,
)

#: Public names imported on first use (PEP 562), so that ``import tensorfile`` imports neither NumPy nor a
#: framework (errors stay eager: they import only ``re``): name -> its module.
_LAZY = {
    "save": ".files", "load": ".files", "open": ".lazy", "TensorFile": ".lazy", "TensorInfo": ".lazyfile",
    "TensorSlice": ".lazyfile", "LazyFile": ".lazyfile", "Limits": ".limits",
    "CheckpointManager": ".checkpoint", "rng_state": ".checkpoint", "set_rng_state": ".checkpoint",
    "save_parameters": ".parameters", "load_parameters": ".parameters", "LoadReport": ".parameters",
    "Mismatch": ".parameters", "save_model": ".model", "load_model": ".model",
}  # fmt: skip
_SUBMODULES = ("checkpoint", "parameters", "model", "formats", "frameworks", "distributed", "cli")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tensorfile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

# ``open`` is left out so that ``from tensorfile import *`` does not shadow the built-in: call ``tensorfile.open``.
__all__ = [
    "save",
    "load",
    "TensorFile",
    "TensorInfo",
    "TensorSlice",
    "LazyFile",
    "Limits",
    "LimitError",
    "save_parameters",
    "save_model",
    "load_model",
    "UnsupportedArchitectureError",
    "load_parameters",
    "LoadReport",
    "Mismatch",
    "ParameterMismatchError",
    "CheckpointManager",
    "rng_state",
    "set_rng_state",
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "CheckpointConflictError",
    "CheckpointCommitError",
    "UnsafeFileError",
    "TensorFileError",
    "FormatError",
    "IntegrityError",
    "UnsupportedTypeError",
    "__version__",
]
