"""The one shape every file format has: :class:`Format`, and the :class:`Probe` its ``sniff`` looks at.

A format module (``formats/torch.py``, ``formats/npy.py``...) defines one or more
``Format`` objects; :mod:`tensorfile.formats` lists them in its registry. Nothing
else in tensorfile names a format: the CLI's ``--format`` choices, ``convert``'s
suffix rules, ``info``'s format names, ``load`` and ``open`` all come from here.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import FormatError
from ..limits import DEFAULT_LIMITS, Budget, Limits

__all__ = ["Format", "Probe", "PROBE_BYTES"]

#: Bytes of a file's start that ``sniff`` sees.
PROBE_BYTES = 4096


class Probe:
    """What ``sniff`` may look at: the first :data:`PROBE_BYTES` bytes, the size, and a zip's member names.

    Attributes:
        path: the file.
        prefix: its first bytes (fewer for a smaller file).
        size: its size in bytes.
    """

    def __init__(self, path: str, prefix: bytes, size: int) -> None:
        self.path, self.prefix, self.size = path, prefix, size
        self._names: list[str] | None | bool = False

    @classmethod
    def of(cls, path: str) -> "Probe | None":
        """The probe of a regular file; None for folders, FIFOs and devices (opened without blocking, never read).

        Raises:
            OSError: the file cannot be opened (FileNotFoundError when it does not exist).
        """
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            return cls(path, os.pread(fd, PROBE_BYTES, 0), info.st_size)
        finally:
            os.close(fd)

    def zip_names(self) -> list[str] | None:
        """The member names of a zip archive (central directory only, nothing inflated); None when not a readable zip."""
        if self._names is False:
            self._names = None
            if self.prefix.startswith(b"PK\x03\x04"):
                from ._zip import MEMBER_BYTES, member_count

                try:
                    count = member_count(self.path)
                    if count is not None and count * MEMBER_BYTES > DEFAULT_LIMITS.allowed(self.size):
                        return None  # too many members to list for sniffing: the reader refuses it within its budget
                    with zipfile.ZipFile(self.path) as zf:
                        self._names = zf.namelist()
                except Exception:  # zipfile raises many kinds for a damaged archive; the reader then names it
                    self._names = None
        return self._names  # type: ignore[return-value]


@dataclass(frozen=True)
class Format:
    """One file format tensorfile reads or writes.

    Attributes:
        name: the format's one name (``"torch"``), as ``save(format=)``, the CLI's
            ``--format`` and ``tensorfile info --json`` use it.
        title: what ``tensorfile info`` calls it (``"PyTorch torch.save (zip)"``).
        framework: the framework its tensors come from (``load`` hands them to it
            when installed, else NumPy).
        suffixes: file suffixes of the format, lower case; for a written format,
            ``convert`` picks it by the destination's suffix.
        sniff: ``sniff(probe) -> confidence`` in [0, 1]: 0 not this format, 1 its
            magic number; the most confident format reads the file.
        sniff_folder: ``sniff_folder(path) -> confidence`` for a folder, for formats
            kept as a folder of files (a DCP checkpoint); the most confident reads it.
        read: ``read(path, budget) -> value``: the whole file as NumPy arrays in
            plain containers (None: not read this way, see ``load``).
        open: ``open(path, budget, framework, options, verify) -> LazyFile`` for
            formats read lazily by a reader of their own (tensorfile, sharded, GGUF).
        index: ``index(path, budget) -> Index`` (:mod:`._index`): the file's tensors
            from its headers, each read when asked for; ``tensorfile.open`` of the
            format is then lazy. None (and no ``open``): read once, then served by
            dotted name.
        load: ``load(path, framework, options, limits)``: the whole file in its
            frameworks, for formats that record more than arrays (tensorfile files
            and sharded checkpoints); None: ``read`` then conversion.
        write: ``write(obj, path, metadata, progress)``, atomic; None: not written.
        flat: the format holds only one tensor, a list or a flat dict of tensors
            (``convert`` flattens nested structures to dotted names for it).
        folder: for a format stored as a folder, ``folder(path) -> file``: the file in the folder
            ``path`` that ``load`` and ``open`` read it through (None: not such a folder).
    """

    name: str
    title: str
    framework: str = "numpy"
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[Probe], float] = field(default=lambda probe: 0.0, repr=False)
    sniff_folder: Callable[[str], float] = field(default=lambda path: 0.0, repr=False)
    read: Callable[[str, Budget], Any] | None = field(default=None, repr=False)
    open: Callable[..., Any] | None = field(default=None, repr=False)
    index: Callable[[str, Budget], Any] | None = field(default=None, repr=False)
    load: Callable[[str, str | None, Mapping[str, Any], Limits], Any] | None = field(default=None, repr=False)
    write: Callable[..., None] | None = field(default=None, repr=False)
    flat: bool = False
    folder: Callable[[str], str | None] | None = field(default=None, repr=False)

    def open_file(self, path: str, limits: Limits, framework: str | None, options: Mapping[str, Any], verify: bool) -> Any:
        """``open``; else ``index`` (headers now, each tensor when asked for); else ``read`` once, then
        tensors served by dotted name (a LazyFile)."""
        if self.open is not None:
            return self.open(path, limits, framework, options, verify)
        from ._opened import open_indexed, open_read

        if self.index is not None:
            return open_indexed(path, self, framework, options, limits)
        return open_read(path, self, framework, options, limits)

    def read_value(self, path: str, limits: Limits) -> Any:
        """``read`` under a fresh budget for this file.

        Raises:
            FormatError: the format is not read this way.
        """
        if self.read is None:
            raise FormatError(f"{path}: {self.title} files are not read as plain arrays")
        return self.read(path, limits.budget(path, os.path.getsize(path)))
