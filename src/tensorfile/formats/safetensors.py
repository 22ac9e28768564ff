"""tensorfile files and plain safetensors files: the formats of tensorfile's core.

Reference: huggingface/safetensors ``safetensors/src/tensor.rs`` for the layout
(an 8-byte little-endian header length, a JSON header, the data); tensorfile's
own record in ``__metadata__`` is described in ``docs/FORMAT.md``. The reader and
writer are :mod:`tensorfile.format`; loading with structure, checksums and shared
storage is :func:`tensorfile.files.load_tensorfile`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..format.sniff import header_fits, looks_like
from ..limits import Limits
from .base import Format, Probe

__all__ = ["TENSORFILE", "SAFETENSORS"]


def _sniff(probe: Probe) -> float:
    """0.9 where the header length fits the file and a JSON object follows; 0.05 for an unknown kind of file
    (the safetensors reader then says what is wrong); 0 for a file that looks like another format."""
    if header_fits(probe.prefix, probe.size):
        return 0.9
    return 0.05 if looks_like(probe.prefix) is None else 0.0


def _load(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits) -> Any:
    from ..files import load_tensorfile

    return load_tensorfile(path, framework, options, limits)


def _open(path: str, limits: Limits, framework: str | None, options: Mapping[str, Any], verify: bool) -> Any:
    from ..lazy import TensorFile

    return TensorFile(path, framework, options.get("map_location"), verify, options.get("device"), limits=limits)


def _write_tensorfile(obj: Any, path: str, metadata: Mapping[str, str] | None, progress: Any) -> None:
    from ..files import save_tensorfile

    save_tensorfile(obj, path, metadata)


def _write_plain(obj: Any, path: str, metadata: Mapping[str, str] | None, progress: Any) -> None:
    from ..files import save_plain

    save_plain(obj, path, metadata)


#: tensorfile's own file: safetensors with the structure, checksums and shared storage recorded.
TENSORFILE = Format(
    "tensorfile", "tensorfile (safetensors with structure and checksums)", "numpy", (".tensorfile",),
    sniff=lambda probe: 0.0,  # a tensorfile file is a safetensors file: SAFETENSORS reads both
    load=_load, open=_open, write=_write_tensorfile,
)  # fmt: skip
#: A plain safetensors file (any safetensors tool's); written with only the user's metadata.
SAFETENSORS = Format(
    "safetensors", "safetensors", "numpy", (".safetensors",), sniff=_sniff, load=_load, open=_open, write=_write_plain,
    flat=True,
)
