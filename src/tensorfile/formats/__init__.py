"""Every file format tensorfile reads or writes, one module each, and the one registry of them.

Each module defines :class:`~tensorfile.formats.base.Format` objects (name, title,
suffixes, ``sniff``, ``read`` / ``open`` / ``load``, ``write``); :data:`FORMATS`
lists them. Adding a format is adding a module and one line here. ``load``,
``open``, ``save(format=)``, ``load_parameters`` and the CLI find formats only
through :func:`detect` and :func:`get`.
"""

from __future__ import annotations

from ..errors import FormatError
from ..format.sniff import looks_like
from .base import Format, Probe
from .dcp import DCP
from .distributed import DISTRIBUTED
from .gguf import GGUF
from .hdf5 import HDF5, KERAS
from .mxnet import MXNET, MXNET_NP
from .npy import NPY, NPZ
from .safetensors import SAFETENSORS, TENSORFILE
from .sharded import SHARDED
from .torch import TORCH
from .torch_legacy import TORCH_LEGACY

__all__ = ["FORMATS", "Format", "Probe", "detect", "get", "written", "by_suffix", "not_tensors", "damaged_zip", "for_destination", "suffix_rules", "in_folder", "detect_folder", "HDF5", "KERAS"]

#: Every format, in the order ties in ``sniff`` are broken.
FORMATS: tuple[Format, ...] = (TENSORFILE, SAFETENSORS, SHARDED, DISTRIBUTED, TORCH, TORCH_LEGACY, NPY, NPZ, MXNET,
                               MXNET_NP, HDF5, KERAS, GGUF, DCP)  # fmt: skip


def get(name: str) -> Format:
    """The format named ``name``.

    Raises:
        ValueError: no such format (the message lists them).
    """
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown format {name!r}; expected one of {[f.name for f in FORMATS]}")


def written() -> list[str]:
    """Names of the formats ``save(format=)`` and ``tensorfile convert`` write."""
    return [f.name for f in FORMATS if f.write is not None]


def by_suffix(path: str) -> Format | None:
    """The format a file named ``path`` gets by its suffix (longest match, ``.weights.h5`` before ``.h5``)."""
    lower = path.lower()
    matches = [(len(s), f) for f in FORMATS for s in f.suffixes if lower.endswith(s)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def for_destination(path: str) -> Format:
    """The format ``tensorfile convert`` writes to ``path`` without ``--format``: by suffix, and a tensorfile
    file (a safetensors file with tensorfile's record) for ``.safetensors``, ``.params`` (the chapter names
    every framework's parameter file so; MXNet's format only with ``--format mxnet``) and unknown suffixes.
    The format returned may be one tensorfile only reads (``write`` None): the caller refuses it."""
    fmt = by_suffix(path)
    return TENSORFILE if fmt is None or fmt in (SAFETENSORS, MXNET, MXNET_NP) else fmt


def suffix_rules() -> str:
    """``for_destination``'s rules, for help texts: ``".pt/.pth torch, .npz npz, ..."``."""
    return ", ".join(f"{'/'.join(f.suffixes)} {f.name}" for f in FORMATS
                     if f.write is not None and f.suffixes and f not in (TENSORFILE, SAFETENSORS, MXNET, MXNET_NP))  # fmt: skip


def in_folder(path: str) -> str | None:
    """The file through which a format stored as a folder is read, when ``path`` is such a folder (a
    distributed checkpoint: its ``manifest.json``); None otherwise."""
    for fmt in FORMATS:
        if fmt.folder is not None:
            found = fmt.folder(path)
            if found is not None:
                return found
    return None


def detect(probe: Probe | None) -> Format | None:
    """The format of the probed file, by content (never by name): the most confident ``sniff``.

    A folder, FIFO or device (``probe`` None) gets the safetensors format, whose
    reader names the problem. None when no format claims the file (see :func:`not_tensors`).
    """
    if probe is None:
        return SAFETENSORS
    best, confidence = None, 0.0
    for fmt in FORMATS:
        c = fmt.sniff(probe)
        if c > confidence:
            best, confidence = fmt, c
    return best


def detect_folder(path: str) -> Format | None:
    """The format of the folder ``path`` (a checkpoint kept as a folder of files): the most confident
    ``sniff_folder``; None when no format claims it."""
    best, confidence = None, 0.0
    for fmt in FORMATS:
        c = fmt.sniff_folder(path)
        if c > confidence:
            best, confidence = fmt, c
    return best


def damaged_zip(probe: Probe) -> str | None:
    """What a zip archive whose central directory cannot be read was (by its first member's name, from the
    local header at its start: APPNOTE.TXT 4.3.7), or None when the file is not such a zip. A ``torch.save``
    file, an ``.npz`` or a ``.keras`` cut short lands here."""
    prefix = probe.prefix
    if not prefix.startswith(b"PK\x03\x04") or probe.zip_names() is not None or len(prefix) < 30:
        return None
    length = int.from_bytes(prefix[26:28], "little")
    name = prefix[30 : 30 + length].decode("utf-8", "replace")
    if name.endswith(("data.pkl", "/byteorder", "/version", ".format_version")) or "/data/" in name:
        return "torch.save zip"
    if name.endswith(".npy"):
        return "NumPy .npz"
    if name in ("metadata.json", "config.json", "model.weights.h5"):
        return ".keras archive"
    return "zip archive"


def not_tensors(probe: Probe) -> FormatError:
    """The error for a file no format claims: what it looks like, by its first bytes."""
    damaged = damaged_zip(probe)
    if damaged is not None:
        return FormatError(f"{probe.path}: a damaged {damaged}: its central directory is missing or unreadable "
                           f"(a truncated file?)")  # fmt: skip
    kind = looks_like(probe.prefix) or "none of the formats tensorfile reads"
    return FormatError(f"{probe.path}: not a file of tensors tensorfile reads; it looks like {kind}")
