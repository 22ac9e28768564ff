"""One file's summary for a report: its format, tensors, bytes, dtypes, framework and checksum status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import formats
from ..lazyfile import LazyFile
from .stats import TensorStats

__all__ = ["FileSummary", "summarize"]


@dataclass
class FileSummary:
    """What the report says of a file as a whole.

    Attributes:
        path: the file. format: its format's title (e.g. ``PyTorch torch.save (zip)``).
        tensors: how many; nbytes: their data in bytes. dtypes: dtype name -> number of tensors.
        frameworks: the frameworks its tensors come from (recorded by tensorfile, else the format's).
        checksums: the checksum status in words (``"xxh3-64 per tensor: all 12 verified"``).
        bad: names of tensors holding NaN or infinite values.
        metadata: the file's user metadata.
    """

    path: str
    format: str
    tensors: int
    nbytes: int
    dtypes: dict[str, int]
    frameworks: list[str]
    checksums: str = ""
    bad: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


#: Formats whose tensors load as NumPy arrays but were written by another framework.
_WRITERS = {"hdf5": "keras", "keras": "keras", "gguf": "llama.cpp (GGUF)"}


def _frameworks(f: LazyFile, fmt: Any) -> list[str]:
    from ..lazy import TensorFile

    if isinstance(f, TensorFile) and f.has_record:
        found = {str(f._info(n).get("framework") or "numpy") for n in f.keys()}
        return sorted(found)
    if fmt.name in ("safetensors", "sharded"):  # plain safetensors files do not say
        return ["not recorded"]
    return [_WRITERS.get(fmt.name, fmt.framework)]


def summarize(f: LazyFile, path: str, stats: Sequence[TensorStats]) -> FileSummary:
    """The :class:`FileSummary` of the opened file ``f`` once ``stats`` (of every tensor) are known."""
    fmt = formats.get(f.format)
    if fmt.name == "safetensors" and f.has_record:
        fmt = formats.get("tensorfile")
    infos = [f.info(n) for n in f.keys()]
    dtypes = dict(sorted(Counter(i.dtype for i in infos).items()))
    out = FileSummary(path, fmt.title, len(infos), sum(i.nbytes for i in infos), dtypes, _frameworks(f, fmt))
    out.metadata = {k: v for k, v in f.metadata.items()}
    verified = sum(1 for s in stats if s.verified)
    if not infos:
        out.checksums = "no tensors to check"
    elif f.has_record:
        sampled = sum(1 for s in stats if s.sampled)
        rest = len(infos) - verified - sampled
        parts = [f"all {verified} verified" if verified == len(infos) else f"{verified} verified"]
        if sampled:
            parts.append(f"{sampled} sampled (not checked)")
        if rest:
            parts.append(f"{rest} not checked here (`tensorfile verify` checks them)")
        out.checksums = "xxh3-64 per tensor: " + ", ".join(parts)
    elif f.format in ("torch", "npz", "keras"):
        out.checksums = "no per-tensor checksums (zip CRC-32 only: `tensorfile verify` checks it)"
    else:
        out.checksums = "none in this format"
    out.bad = [s.name for s in stats if s.bad]
    return out
