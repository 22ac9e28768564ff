"""The exception hierarchy of tensorfile.

Every error raised on purpose by tensorfile derives from :class:`TensorFileError`.
Each subclass also derives from the built-in exception an ordinary ``except``
clause would expect, so ``except ValueError`` still catches a malformed file.

Messages name the file, the tensor (or the place in a container), what was
expected and what was found.
"""

from __future__ import annotations

import re

__all__ = [
    "TensorFileError",
    "FormatError",
    "IntegrityError",
    "UnsupportedTypeError",
    "ParameterMismatchError",
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "CheckpointConflictError",
    "UnsafeFileError",
    "LimitError",
    "UnsupportedArchitectureError",
    "CheckpointCommitError",
]


#: The most characters of one value (a quoted string, a bracketed list or tuple, a run without spaces) a message
#: quotes; a file's names and values are cut to this, so a message never holds a file's megabytes.
MAX_VALUE_CHARS = 200

_QUOTED = re.compile(r"""'(?:[^'\\\n]|\\.){%d,}'|"(?:[^"\\\n]|\\.){%d,}"|[^\s'"\[\]()]{%d,}""" % ((MAX_VALUE_CHARS - 1,) * 3))
_PAIRS = {"]": "[", ")": "("}


def _cut(text: str) -> str:
    keep = MAX_VALUE_CHARS - 4
    close = text[-1] if text[-1] in "'\")]" else ""
    return f"{text[:keep]}...{close} ({len(text) - keep} more characters)"


def clip_values(message: str) -> str:
    """``message`` with every value longer than :data:`MAX_VALUE_CHARS` (a quoted string, a bracketed list,
    tuple or array over any number of lines, a run of other characters without spaces) cut to that length,
    saying how much was cut. One pass over the message."""
    if len(message) <= MAX_VALUE_CHARS:
        return message
    message = _QUOTED.sub(lambda m: _cut(m.group(0)), message)
    spans: list[tuple[int, int]] = []  # outermost bracketed spans longer than the limit
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(message):
        if ch in "[(":
            stack.append((ch, i))
        elif ch in _PAIRS and stack and stack[-1][0] == _PAIRS[ch]:
            _, start = stack.pop()
            if i + 1 - start > MAX_VALUE_CHARS:
                while spans and spans[-1][0] > start:  # an inner span: the outer one replaces it
                    spans.pop()
                spans.append((start, i + 1))
    if not spans:
        return message
    out, last = [], 0
    for start, end in spans:
        out += [message[last:start], _cut(message[start:end])]
        last = end
    out.append(message[last:])
    return "".join(out)


class TensorFileError(Exception):
    """Base class of every error tensorfile raises on purpose (its message quotes at most
    :data:`MAX_VALUE_CHARS` characters of any one value)."""

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (clip_values(args[0]), *args[1:])
        super().__init__(*args)


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
        Exception.__init__(self, message)  # every problem listed in full, as torch does (names are cut where made)
        self.report = report


class CheckpointNotFoundError(TensorFileError, FileNotFoundError):
    """No committed (and valid) checkpoint step to restore."""


class CheckpointLockedError(TensorFileError, RuntimeError):
    """Another CheckpointManager (another process) holds the checkpoint folder."""


class CheckpointConflictError(TensorFileError, FileExistsError):
    """Another writer committed the same checkpoint step first (on object storage, where two
    CheckpointManagers can write one location: the commit object is created only if absent)."""


class CheckpointCommitError(TensorFileError, RuntimeError):
    """A distributed checkpoint was not committed: another rank failed, or the ranks disagree on the state
    (the message names the rank); the previous checkpoint, if any, is still the one in force."""


class UnsafeFileError(TensorFileError, ValueError):
    """A file asks for something never done for a file: a pickle global outside the table of known-safe
    names, or HDF5 storage outside the file (external storage, virtual datasets, external links)."""


class LimitError(FormatError):
    """A file asks for more than :class:`tensorfile.Limits` allows: bytes to allocate, tensors, nesting, header size.

    A subclass of :class:`FormatError` (an honest file of that kind never asks for it);
    the message names the limit to raise for a trusted file.
    """


class UnsupportedArchitectureError(FormatError):
    """A model cannot be saved as a graph (data-dependent control flow, a Python side effect, an op outside
    the vocabulary, a custom kernel), or a file's model graph is malformed or hostile. The message names the
    node and the op (``docs/FORMAT.md``, "Model graphs")."""
