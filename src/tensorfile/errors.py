"""The exception hierarchy of tensorfile.

Every error raised on purpose by tensorfile derives from :class:`TensorFileError`.
Each subclass also derives from the built-in exception an ordinary ``except``
clause would expect, so ``except ValueError`` still catches a malformed file.

Messages name the file, the tensor (or the place in a container), what was
expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "TensorFileError",
    "FormatError",
    "IntegrityError",
    "UnsupportedTypeError",
    "ParameterMismatchError",
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "UnsafeFileError",
    "LimitError",
]


class TensorFileError(Exception):
    """Base class of every error tensorfile raises on purpose."""


class FormatError(TensorFileError, ValueError):
    """The file is malformed, truncated, or not in a format tensorfile reads."""


class IntegrityError(TensorFileError, ValueError):
    """A tensor's bytes do not match the checksum recorded when it was saved."""


class UnsupportedTypeError(TensorFileError, TypeError):
    """A value cannot be stored: an unsupported type or dtype, named with its place."""


class ParameterMismatchError(TensorFileError, RuntimeError):
    """``load_parameters(strict=True)`` found problems; the message lists every one.

    Attributes:
        report: the :class:`tensorfile.parameters.LoadReport` with the details.
    """

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class CheckpointNotFoundError(TensorFileError, FileNotFoundError):
    """No committed (and valid) checkpoint step to restore."""


class CheckpointLockedError(TensorFileError, RuntimeError):
    """Another CheckpointManager (another process) holds the checkpoint folder."""


class UnsafeFileError(TensorFileError, ValueError):
    """A file asks for something never done for a file: a pickle global outside the table of known-safe
    names, or HDF5 storage outside the file (external storage, virtual datasets, external links)."""


class LimitError(FormatError):
    """A file asks for more than :class:`tensorfile.Limits` allows: bytes to allocate, tensors, nesting, header size.

    A subclass of :class:`FormatError` (an honest file of that kind never asks for it);
    the message names the limit to raise for a trusted file.
    """
