"""tensorfile: save and load tensors, parameters and checkpoints safely and fast.

One API for NumPy and PyTorch (more frameworks to come) on a safetensors-compatible
file that also records structure and checksums, and never runs code when loaded.

    >>> import numpy as np, tensorfile
    >>> tensorfile.save({"x": np.arange(4), "step": 3}, "mydict")
    >>> tensorfile.load("mydict")
    {'x': array([0, 1, 2, 3]), 'step': 3}

See ``docs/FORMAT.md`` for the file format.
"""

from __future__ import annotations

from .checkpoint import CheckpointManager, rng_state, set_rng_state
from .errors import (
    CheckpointLockedError,
    CheckpointNotFoundError,
    FormatError,
    IntegrityError,
    LimitError,
    ParameterMismatchError,
    TensorFileError,
    UnsafeFileError,
    UnsupportedTypeError,
)
from .files import load, save
from .lazy import TensorFile, TensorInfo, TensorSlice, open
from .lazyfile import LazyFile
from .limits import Limits
from .parameters import LoadReport, Mismatch, load_parameters, save_parameters

__version__ = "0.1.0"

__all__ = [
    "save",
    "load",
    "open",
    "TensorFile",
    "TensorInfo",
    "TensorSlice",
    "LazyFile",
    "Limits",
    "LimitError",
    "save_parameters",
    "load_parameters",
    "LoadReport",
    "Mismatch",
    "ParameterMismatchError",
    "CheckpointManager",
    "rng_state",
    "set_rng_state",
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "UnsafeFileError",
    "TensorFileError",
    "FormatError",
    "IntegrityError",
    "UnsupportedTypeError",
    "__version__",
]
